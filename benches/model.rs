//! Model scoring in the hot path.
//!
//! The shipped demo stream (`replay-data/demo.jsonl.gz`) is replayed through
//! the engine with the shipped rules, a logistic regression and a forest (the
//! default parameters) are trained on its feature vectors, and the benches
//! score those same vectors in turn:
//! - `model/score`: one transfer's fraud probability (`forest`, `logistic`);
//! - `model/explain`: the same plus the top-3 reasons.
//!
//! The target is under 2 µs per event. Run: `cargo bench --bench model`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use fds::engine::Engine;
use fds::event::DAY_MS;
use fds::features::FeatureVector;
use fds::input::{self, Format};
use fds::model::dataset::{self, Selection};
use fds::model::train::{self, Algorithm, Provenance, TrainOptions};
use fds::model::Model;
use fds::rules::RuleSet;

fn demo_rows() -> (Vec<dataset::Row>, Vec<bool>, usize) {
    let rules = RuleSet::load_dir(Path::new("rules")).expect("the shipped rules load");
    let engine = Engine::with_rules(rules);
    let source = input::open(Path::new("replay-data/demo.jsonl.gz"), Format::Auto).expect("the demo stream opens");
    let selection = Selection { warmup_ms: 2 * DAY_MS, ..Selection::default() };
    let data = dataset::collect(&engine, vec![source], selection).expect("the demo stream replays");
    let y = data.targets();
    let labels = data.labels.len();
    (data.rows, y, labels)
}

fn bench_model(c: &mut Criterion) {
    let (rows, y, labels) = demo_rows();
    let from = Provenance { name: "bench".into(), labels_in_stream: labels, ..Provenance::default() };
    let models: Vec<(&str, Model)> = [Algorithm::Forest, Algorithm::Logistic]
        .into_iter()
        .map(|a| {
            let opts = TrainOptions { algorithm: a, ..TrainOptions::default() };
            (a.name(), train::train(&rows, &y, &opts, &from).expect("the demo trains"))
        })
        .collect();
    // And the shipped model, which the demo and `fds run` score with.
    let mut models = models;
    models.push(("shipped", Model::load(std::path::Path::new("models/default")).expect("models/default loads")));
    // Vectors as the engine hands them over: typed features, converted per score.
    let vectors: Vec<FeatureVector> = rows
        .iter()
        .take(4096)
        .map(|r| {
            let mut values = [fds::features::Value::Int(0); fds::features::N_FEATURES];
            for (i, (v, d)) in values.iter_mut().zip(fds::features::SCHEMA).enumerate() {
                *v = match d.kind {
                    fds::features::FeatureType::Bool => fds::features::Value::Bool(r.features[i] != 0.0),
                    fds::features::FeatureType::Int => fds::features::Value::Int(r.features[i] as i64),
                    fds::features::FeatureType::Float => fds::features::Value::Float(r.features[i]),
                };
            }
            FeatureVector::from_values(values)
        })
        .collect();

    per_model(c, "model/score", &models, &vectors, |m, v| m.score(v));
    per_model(c, "model/explain", &models, &vectors, |m, v| m.explain(v, 3).len() as f64);
}

/// One bench per model in `group`, cycling through the vectors.
fn per_model(
    c: &mut Criterion,
    group: &str,
    models: &[(&str, Model)],
    vectors: &[FeatureVector],
    op: impl Fn(&Model, &FeatureVector) -> f64,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for (name, model) in models {
        let mut i = 0;
        g.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) % vectors.len();
                black_box(op(model, black_box(&vectors[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);
