//! What the brokers say now, against what a copy covers: where partitions
//! end, the message just before a position (its fingerprint), and the
//! group's committed offsets.

use std::collections::HashMap;

use super::*;

/// How long a read of a partition's message at an offset may take.
const FINGERPRINT_WAIT: Duration = Duration::from_secs(10);

/// The committed offsets a copy without the changelog covers, against the
/// group's now: equal, or why not.
pub(super) fn offsets_match(covered: &[(String, i32, i64)], committed: &Offsets) -> Result<(), Skip> {
    let covered: Offsets = covered.iter().map(|(t, p, o)| ((t.clone(), *p), *o)).collect();
    if &covered == committed {
        return Ok(());
    }
    let detail = committed
        .iter()
        .filter(|(k, v)| covered.get(*k) != Some(*v))
        .map(|((t, p), v)| format!("{t}/{p}: committed {v}, copy {:?}", covered.get(&(t.clone(), *p))))
        .chain(
            covered.keys().filter(|k| !committed.contains_key(*k)).map(|(t, p)| format!("{t}/{p}: in the copy only")),
        )
        .collect::<Vec<_>>()
        .join("; ");
    Err(Skip::Stale(format!(
        "it covers input up to other offsets than the group has committed ({detail}): the input moved on after it \
         was written (a crash, another instance, or a new broker such as the embedded one, which starts empty)"
    )))
}

/// Where each of `partitions` of `topic` stands now: its end ([`Seen`]).
pub(super) fn seen<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Seen>, String> {
    let mut ends = Vec::new();
    for &p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{p}: no watermarks: {e}"))?;
        ends.push((p, high));
    }
    seen_at(consumer, topic, &ends)
}

/// [`Seen`] of each (partition, next offset) of `topic`: the fingerprint of
/// the message before `next`.
pub(super) fn seen_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    at: &[(i32, i64)],
) -> Result<HashMap<i32, Seen>, String> {
    let wanted: Vec<(i32, i64)> = at.iter().filter(|(_, next)| *next > 0).map(|&(p, next)| (p, next - 1)).collect();
    let prints = fingerprints(consumer, topic, &wanted)?;
    Ok(at.iter().map(|&(p, next)| (p, Seen { next, last: prints.get(&p).copied() })).collect())
}

/// Whether each partition in `expected` of `topic` still holds, just before
/// `next`, the message it held (`at_end`: and still ends there), each
/// partition's verdict on its own. `Err` when the brokers cannot tell.
pub(super) fn check_each<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    expected: &[(i32, Seen)],
    at_end: bool,
) -> Result<HashMap<i32, Result<(), String>>, String> {
    let mut verdicts = HashMap::new();
    let mut wanted = Vec::new();
    for &(p, seen) in expected {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{p}: no watermarks: {e}"))?;
        let verdict = if at_end && high != seen.next {
            Err(format!("{topic}/{p} ends at {high}, not {} as then: written since", seen.next))
        } else if high < seen.next {
            Err(format!("{topic}/{p} ends at {high}, before {} (a new topic or broker)", seen.next))
        } else if low > seen.next || (seen.last.is_some() && low > seen.next - 1) {
            Err(format!("{topic}/{p} starts at {low}: messages not yet counted are gone"))
        } else {
            // Without a message before `next` (nothing was, or retention had
            // taken it), the bounds are all there is to check.
            if seen.last.is_some() {
                wanted.push((p, seen.next - 1));
            }
            Ok(())
        };
        verdicts.insert(p, verdict);
    }
    let prints = fingerprints(consumer, topic, &wanted)?;
    for &(p, seen) in expected {
        if seen.last.is_some() && verdicts[&p].is_ok() && prints.get(&p).copied() != seen.last {
            let why = format!("{topic}/{p} holds another message at {} (a new topic or broker)", seen.next - 1);
            verdicts.insert(p, Err(why));
        }
    }
    Ok(verdicts)
}

/// [`check_each`], all or nothing: `Err` names the first partition that
/// no longer matches.
pub(super) fn still<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    expected: &[(i32, Seen)],
    at_end: bool,
) -> Result<(), Skip> {
    let verdicts = check_each(consumer, topic, expected, at_end).map_err(Skip::Unchecked)?;
    let mut failed: Vec<(i32, String)> =
        verdicts.into_iter().filter_map(|(p, v)| v.err().map(|why| (p, why))).collect();
    failed.sort();
    match failed.into_iter().next() {
        Some((_, why)) => Err(Skip::Stale(why)),
        None => Ok(()),
    }
}

/// A fingerprint of the message at each (partition, offset) of `topic`
/// (left out where that offset holds none).
fn fingerprints<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    wanted: &[(i32, i64)],
) -> Result<HashMap<i32, u32>, String> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in wanted {
        tpl.add_partition_offset(topic, p, Offset::Offset(o)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("{topic}: cannot read: {e}"))?;
    let mut left: HashMap<i32, i64> = wanted.iter().copied().collect();
    // Short: a broker that never delivers the offset asked for (tansu 0.6's
    // memory storage, for an offset inside a batch) should not hold up a
    // stop or a start for long.
    let deadline = Instant::now() + FINGERPRINT_WAIT;
    while !left.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(&o) = left.get(&m.partition()) else { continue };
                if m.offset() == o {
                    let mut h = crc32fast::Hasher::new();
                    h.update(m.key().unwrap_or_default());
                    h.update(m.payload().unwrap_or_default());
                    h.update(&m.timestamp().to_millis().unwrap_or(0).to_le_bytes());
                    out.insert(m.partition(), h.finalize());
                }
                if m.offset() >= o {
                    left.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, %topic, "reading a partition's last message"),
            None => {}
        }
    }
    let _ = consumer.unassign();
    if left.is_empty() {
        Ok(out)
    } else {
        Err(format!("{topic}: the messages at {left:?} did not arrive within {FINGERPRINT_WAIT:?}"))
    }
}

/// Committed offsets by (topic, partition).
pub(super) type Offsets = std::collections::BTreeMap<(String, i32), i64>;

/// The group's committed offsets on every partition of some topics.
pub(super) struct Committed {
    /// Partitions of the topics, committed or not.
    pub(super) partitions: usize,
    /// Each partition with a committed offset (one with none is left out, so
    /// an empty group matches no copy).
    pub(super) offsets: Offsets,
}

/// The group's committed offsets on every partition of `topics`.
pub(super) fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
) -> Result<Committed, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let partitions = tpl.count();
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let offsets = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect();
    Ok(Committed { partitions, offsets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_must_be_the_ones_committed() {
        let committed: Offsets = [(("transfers".to_owned(), 0), 10)].into();
        assert!(offsets_match(&[("transfers".into(), 0, 10)], &committed).is_ok());
        let Err(Skip::Stale(why)) = offsets_match(&[("transfers".into(), 0, 9)], &committed) else { panic!() };
        assert!(why.contains("transfers/0: committed 10"), "{why}");
    }
}
