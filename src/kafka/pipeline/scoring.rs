//! The scoring thread: each message through the engine in order, its
//! decision or dead-letter record to the producer, acknowledgements settled
//! and offsets stored.

use super::*;

/// The scoring thread's working set.
pub(super) struct ScoringThread<'a> {
    pub(super) engine: &'a Engine,
    pub(super) topics: &'a Topics,
    pub(super) metrics: &'a Metrics,
    pub(super) producer: &'a ThreadedProducer<AckContext>,
    pub(super) consumer: &'a BaseConsumer<GroupContext>,
    pub(super) stop: &'a StopFlag,
    pub(super) summary: Summary,
    pub(super) consumed_transfers: prometheus::IntCounter,
    pub(super) consumed_context: prometheus::IntCounter,
    pub(super) consumed_labels: prometheus::IntCounter,
    pub(super) last_store: Instant,
    /// The decision being written (reused: one exact allocation per decision,
    /// the copy kept for redeliveries, instead of a growing buffer each time).
    pub(super) json: Vec<u8>,
    pub(super) rule_counters: RuleCounters,
    /// Decisions go to the partition number their transfer came from when the
    /// decisions topic has as many partitions as the transfers topic (checked
    /// at start): the same per-account order as keying, without hashing every
    /// key again in the producer.
    pub(super) same_partitions: bool,
    /// The wall clock (Unix ms) when the burst being handled was taken.
    pub(super) burst_wall_ms: i64,
    /// Per input partition, the next offset the state has not learnt.
    pub(super) positions: Positions,
    /// The shared payee and device tables' traffic.
    pub(super) shared: SharedTables,
}

/// Dead-letter payloads are cut to this size (Kafka's default record limit is
/// about 1 MB, and the reason headers come on top).
pub(super) const DEAD_LETTER_MAX_BYTES: usize = 512 * 1024;

/// Messages handled back to back before the loop's checks (acknowledgements,
/// offsets, stop, helper threads) run again. At 100,000 messages a second, 64
/// is well under a millisecond.
pub(super) const BURST: usize = 64;

/// How often finished offsets are handed to the consumer for its commits.
pub(super) const STORE_EVERY: Duration = Duration::from_millis(5);

/// Where an output record goes and what it carries.
pub(super) struct Out<'m> {
    pub(super) topic: &'m str,
    pub(super) key: Option<&'m [u8]>,
    pub(super) payload: &'m [u8],
    pub(super) headers: OwnedHeaders,
    /// `None`: the producer picks by key.
    pub(super) partition: Option<i32>,
}

/// The headers every decision carries (a re-sent one adds `fds-redelivered`):
/// the transfer's id, the verdict, whether it was late, and which message it
/// answers (so a restarted instance can tell that message delivered again
/// from the same transfer sent again).
pub(super) fn decision_headers(tran_id: &str, outcome: Outcome, late: bool, source: Origin) -> OwnedHeaders {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: HEADER_CORRELATION_ID, value: Some(tran_id.as_bytes()) })
        .insert(Header { key: HEADER_DECISION, value: Some(outcome.name()) })
        .insert(Header { key: HEADER_LATE, value: Some(if late { "true" } else { "false" }) })
        .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(&partition) })
        .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(&offset) })
}

/// The `fds_rule_fired_total` counters of one rule set, indexed like its
/// rules (live rules labelled `shadow="false"`, shadow rules `"true"`),
/// resolved once per rule set instead of hashing labels per firing.
#[derive(Default)]
pub(super) struct RuleCounters {
    pub(super) rules: Option<Arc<RuleSet>>,
    pub(super) counters: Vec<prometheus::IntCounter>,
}

impl RuleCounters {
    pub(super) fn for_rules(&mut self, rules: &Arc<RuleSet>, metrics: &Metrics) -> &[prometheus::IntCounter] {
        if !self.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules)) {
            self.counters = rules
                .rules()
                .iter()
                .map(|r| metrics.rules_fired.with_label_values(&[r.id(), if r.shadow() { "true" } else { "false" }]))
                .collect();
            self.rules = Some(rules.clone());
        }
        &self.counters
    }
}

impl ScoringThread<'_> {
    pub(super) fn handle(&mut self, msg: &BorrowedMessage<'_>, event: Result<Event, EventError>) {
        let topic = feed_of(self.topics, msg.topic());
        let source = Origin { topic, partition: msg.partition(), offset: msg.offset() };
        self.consumer.context().book().tracker.begin(topic, source.partition, source.offset);
        self.summary.consumed += 1;
        if topic == Feed::Transfers {
            self.consumed_transfers.inc();
        } else {
            self.consumed_context.inc();
        }
        // Whether the state already holds this message: it was handled here
        // before (a partition given back and taken again), or the restored
        // state covers it.
        let next = self.positions.entry((topic, source.partition)).or_insert(0);
        let known = source.offset < *next;
        *next = (*next).max(source.offset + 1);
        let event = match event {
            Ok(e) => e,
            Err(e) => return self.dead_letter(msg, source, DeadLetterKind::of(&e), &e.to_string()),
        };
        let belongs = match &event {
            Event::Transfer(_) => topic == Feed::Transfers,
            Event::Label(_) => false,
            _ => topic == Feed::Context,
        };
        if !belongs {
            let reason = format!("a {} event does not belong on topic {}", event.kind(), msg.topic());
            return self.dead_letter(msg, source, DeadLetterKind::WrongTopic, &reason);
        }

        if let Event::Transfer(t) = &event {
            let given = self.consumer.context().memory().get(&t.bank_tran_id).map(|r| {
                let same_message = r.source == Some((source.partition, source.offset));
                (r.decision().to_vec(), r.late, r.outcome, same_message)
            });
            if let Some((given, late, outcome, same_message)) = given {
                if same_message && !known {
                    // Decided before a crash, after the restored state's
                    // position: the state learns it again, in the same order
                    // as the first time; the answer stays the one given.
                    let _ = self.learn(&event, source);
                }
                self.metrics.decisions_redelivered.inc();
                self.summary.redelivered += 1;
                let headers = decision_headers(&t.bank_tran_id, outcome, late, source)
                    .insert(Header { key: HEADER_REDELIVERED, value: Some("true") });
                let out = Out {
                    topic: &self.topics.decisions,
                    key: msg.key(),
                    payload: &given,
                    headers,
                    partition: self.partition(source),
                };
                return self.produce(out, source);
            }
        }

        if known && !matches!(event, Event::Transfer(_)) {
            // A context event the state already holds: applied once only.
            self.summary.context_events += 1;
            self.consumer.context().book().tracker.finish(source.topic, source.partition, source.offset);
            return;
        }

        match self.learn(&event, source) {
            Err(e @ EngineError::AheadOfClock { .. }) => {
                self.dead_letter(msg, source, DeadLetterKind::AheadOfClock, &e.to_string())
            }
            Ok(None) => {
                self.summary.context_events += 1;
                self.consumer.context().book().tracker.finish(source.topic, source.partition, source.offset);
            }
            Ok(Some(scored)) => {
                let d = &scored.decision;
                // Read again: late and the decision's age count the engine's
                // time too (an expiry sweep runs inline).
                let now_ms = chrono::Utc::now().timestamp_millis();
                let late = deadline_ms(msg).is_some_and(|deadline| now_ms > deadline);
                self.json.clear();
                d.write_json_with_late(late, &mut self.json);
                let from = Some((source.partition, source.offset));
                self.consumer.context().memory().insert(&d.bank_tran_id, &self.json, late, d.outcome, from);
                self.metrics.count_decision(d.outcome, d.verification);
                if let Some(m) = &d.model {
                    self.metrics.model_score.observe(m.score);
                    if m.hold {
                        self.metrics.model_holds.inc();
                    }
                }
                if let Some(source) = d.held_by() {
                    self.metrics.count_hold(source);
                }
                self.metrics.engine_latency.observe(d.latency_ns as f64 * 1e-9);
                if let Some(created) = msg.timestamp().to_millis() {
                    self.metrics.decision_age.observe((now_ms - created).max(0) as f64 * 1e-3);
                }
                if !d.fired.is_empty() || !d.shadow_fired.is_empty() {
                    let counters = self.rule_counters.for_rules(&d.rules, self.metrics);
                    for &i in &d.fired {
                        counters[usize::from(i)].inc();
                    }
                    for &i in &d.shadow_fired {
                        counters[usize::from(i)].inc();
                    }
                }
                if late {
                    self.metrics.decisions_late.inc();
                    self.summary.late += 1;
                }
                self.summary.decisions += 1;
                let headers = decision_headers(&d.bank_tran_id, d.outcome, late, source);
                let json = std::mem::take(&mut self.json);
                let partition = self.partition(source);
                let out = Out { topic: &self.topics.decisions, key: msg.key(), payload: &json, headers, partition };
                self.produce(out, source);
                self.json = json;
            }
        }
    }

    /// An input event into the engine; a transfer is counted in the shared
    /// tables unless it already is, and then goes out to the other instances.
    fn learn(&mut self, event: &Event, source: Origin) -> Result<Option<Scored>, EngineError> {
        let Event::Transfer(t) = event else { return self.engine.process_at(event, Some(self.burst_wall_ms)) };
        let shared = self.shared.count(source.partition, source.offset, t).unwrap_or(SharedCount::ALREADY_COUNTED);
        let scored = self.engine.process_shared(event, Some(self.burst_wall_ms), shared)?;
        // Published even when counted here already (from the previous
        // owner's observation): an instance that owned this partition for a
        // while skipped that observation, and learns the transfer from this
        // one. The others count it once all the same.
        self.shared.publish(source.partition, &Observation::of(t, &t.payee_key(), source.offset));
        Ok(scored)
    }

    /// A fraud report from the labels topic: into the state. Labels are read
    /// by every instance, so a bad one is reported (log, metric) but not
    /// dead-lettered: N instances would write N copies.
    pub(super) fn handle_label(&mut self, msg: &BorrowedMessage<'_>, event: Result<Event, EventError>) {
        self.consumed_labels.inc();
        match event {
            Ok(e @ Event::Label(_)) => {
                if let Err(err) = self.engine.process_at(&e, Some(self.burst_wall_ms)) {
                    tracing::warn!(error = %err, offset = msg.offset(), "label refused");
                }
            }
            Ok(other) => {
                self.metrics.dead_letters.with_label_values(&[DeadLetterKind::WrongTopic.name()]).inc();
                tracing::warn!(kind = other.kind(), offset = msg.offset(), "not a label on the labels topic");
            }
            Err(e) => {
                self.metrics.dead_letters.with_label_values(&[DeadLetterKind::of(&e).name()]).inc();
                tracing::warn!(offset = msg.offset(), "bad label: {}", crate::event::redact(&e.to_string()));
            }
        }
    }

    /// Where a decision for a message from `source` goes (see `same_partitions`).
    pub(super) fn partition(&self, source: Origin) -> Option<i32> {
        self.same_partitions.then_some(source.partition)
    }

    pub(super) fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        source: Origin,
        kind: DeadLetterKind,
        reason: &str,
    ) {
        // The reason may quote the payload; account numbers stay out of logs.
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            key = %msg.key().map(|k| mask_account(&String::from_utf8_lossy(k))).unwrap_or_default(),
            kind = kind.name(),
            "dead-lettered: {}",
            crate::event::redact(reason)
        );
        self.metrics.dead_letters.with_label_values(&[kind.name()]).inc();
        self.summary.dead_letters += 1;
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: HEADER_ERROR, value: Some(reason) })
            .insert(Header { key: HEADER_ERROR_KIND, value: Some(kind.name()) })
            .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(msg.topic()) })
            .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(&offset) });
        // A record near the broker's size limit would not fit with the
        // headers added: keep its head and say how long it was.
        let original = msg.payload().unwrap_or_default();
        let (payload, headers) = if original.len() > DEAD_LETTER_MAX_BYTES {
            let size = original.len().to_string();
            let h = headers.insert(Header { key: HEADER_TRUNCATED_FROM, value: Some(&size) });
            (&original[..DEAD_LETTER_MAX_BYTES], h)
        } else {
            (original, headers)
        };
        let out = Out { topic: &self.topics.dead_letter, key: msg.key(), payload, headers, partition: None };
        self.produce(out, source);
    }

    /// Hand a record to the producer. When its queue is full (the broker is
    /// slow or away) wait here, settling acknowledgements, until there is room:
    /// back-pressure instead of unbounded memory. A stop request ends the wait;
    /// the record's offset then stays unfinished and is delivered again after
    /// the restart.
    pub(super) fn produce(&mut self, out: Out<'_>, source: Origin) {
        let mut headers = Some(out.headers);
        let mut partition = out.partition;
        while !self.stop.load(Ordering::Relaxed) {
            let mut record = BaseRecord::with_opaque_to(out.topic, Box::new((source, Instant::now())))
                .payload(out.payload)
                .headers(headers.take().expect("headers are put back on retry"));
            if let Some(k) = out.key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send(record) {
                Ok(()) => return,
                // The partition number of the transfer is not one the output
                // topic has (its input topic grew since the start): go by key.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), record))
                    if partition.is_some() =>
                {
                    headers = record.headers;
                    partition = None;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    self.settle_acks();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, record)) => {
                    // Not a full queue: a record the client refuses (unknown
                    // topic, a fatal producer state). Retrying is all that
                    // keeps it from being lost; say so loudly and back off.
                    tracing::error!(error = %e, topic = out.topic, "cannot produce; retrying in 1 s");
                    self.metrics.produce_retries.inc();
                    headers = record.headers;
                    self.settle_acks();
                    if self.producer.client().fatal_error().is_some() {
                        return; // the main loop stops on it
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Take the broker's acknowledgements and move the offset watermarks;
    /// produce again what failed, after a back-off.
    pub(super) fn settle_acks(&mut self) {
        let mut retries = Vec::new();
        self.consumer.context().book().drain(self.metrics, &mut retries);
        if retries.is_empty() {
            return;
        }
        tracing::warn!(records = retries.len(), error = %retries[0].1.error, "deliveries failed; producing again");
        std::thread::sleep(Duration::from_millis(100));
        for (source, r) in retries {
            self.metrics.produce_retries.inc();
            let out = Out {
                topic: &r.topic,
                key: r.key.as_deref(),
                payload: &r.payload,
                headers: r.headers.clone().unwrap_or_default(),
                // By key: a failed record may have failed for its partition.
                partition: None,
            };
            self.produce(out, source);
        }
    }

    /// Store the offsets that became safe. Called every few milliseconds:
    /// storing is a call into the client, and the commit runs each second.
    pub(super) fn store_offsets(&mut self) {
        self.last_store = Instant::now();
        self.consumer.context().store_offsets(self.consumer);
    }
}

/// The `deadline-ms` header, if the transfer API sent one.
pub(super) fn deadline_ms(msg: &BorrowedMessage<'_>) -> Option<i64> {
    header(msg, HEADER_DEADLINE_MS)?.trim().parse().ok()
}

pub(super) fn correlation_id<M: Message>(msg: &M) -> Option<String> {
    header(msg, HEADER_CORRELATION_ID).map(str::to_owned)
}

pub(super) fn header<'m, M: Message>(msg: &'m M, key: &str) -> Option<&'m str> {
    msg.headers()?.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(h.value?).ok())
}
