//! The producing side of a load: the input read and serialized before the
//! clock starts, then sent at the asked pace to the input topics as the
//! transfer API and the bank's other systems send it, each transfer noted to
//! the decision reader just before it is handed to the producer.

use super::*;

/// The producer's delivery reports: failures are counted, and failed
/// transfers (known by their correlation-id header) are taken off the list of
/// those waited for.
pub(super) struct Delivery {
    pub(super) notes: Sender<Note>,
    pub(super) failed: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((e, msg)) = result else { return };
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                tracing::warn!(topic = msg.topic(), error = %e, "the producer gave up on a message");
                *first = Some(format!("{}: {e}", msg.topic()));
            }
        }
        let id = msg.headers().and_then(|h| {
            h.iter().find(|h| h.key == HEADER_CORRELATION_ID).and_then(|h| h.value).map(String::from_utf8_lossy)
        });
        if let Some(id) = id {
            let _ = self.notes.send(Note::Failed { id: id.into() });
        }
    }
}

/// What the producing side did.
#[derive(Debug, Default)]
pub(super) struct Produced {
    pub(super) transfers: u64,
    pub(super) context_events: u64,
    pub(super) labels: u64,
    pub(super) bad_lines: u64,
    pub(super) bad_line_samples: Vec<BadLine>,
    pub(super) stopped_at_limit: bool,
    pub(super) queue_full_waits: u64,
    pub(super) in_flight_waits: u64,
    pub(super) first_send: Option<Instant>,
    pub(super) last_send: Option<Instant>,
}

/// Transfers holding an in-flight slot: the ones the reader has taken in and
/// not settled, plus the ones sent since that it has not taken in yet (they
/// are outstanding by definition). `sent - taken_in + (taken_in - settled)`.
pub(super) fn in_flight(sent: u64, settled: u64) -> u64 {
    sent.saturating_sub(settled)
}

/// Wait, up to `max_wait`, until fewer than `max` transfers are in flight.
/// Returns whether the send had to wait at all.
///
/// The wait is bounded as a last resort: the reader ages out transfers
/// outstanding longer than the drain, but if it stalls, the load still goes on.
pub(super) fn wait_for_slot(sent: u64, max: u64, max_wait: Duration, settled: impl Fn() -> u64) -> bool {
    if in_flight(sent, settled()) < max {
        return false;
    }
    let waiting = Instant::now();
    while in_flight(sent, settled()) >= max && waiting.elapsed() < max_wait {
        std::thread::sleep(Duration::from_micros(100));
    }
    true
}

/// Where a prepared event goes.
pub(super) enum Route {
    /// A transfer, timed: its id is the correlation id the answer comes back under.
    Transfer {
        id: Box<str>,
    },
    Label,
    Context,
}

/// One event read, checked and serialized before the clock starts.
pub(super) struct Outgoing {
    pub(super) route: Route,
    /// The event's time, Unix ms (for `--speed`).
    pub(super) time_ms: i64,
    pub(super) key: Box<str>,
    /// The payload's bytes in [`Prepared::bytes`].
    pub(super) payload: std::ops::Range<usize>,
}

/// The whole input, ready to send. Reading and serializing happen before the
/// first send, so the timed part of a load is the pipeline's work and not the
/// load's own file reading, which shares the machine with `fds run` when both
/// run on one host.
#[derive(Default)]
pub(super) struct Prepared {
    pub(super) records: Vec<Outgoing>,
    /// Every payload, back to back (one allocation instead of one per event).
    pub(super) bytes: Vec<u8>,
    pub(super) bad_lines: u64,
    pub(super) bad_line_samples: Vec<BadLine>,
    pub(super) stopped_at_limit: bool,
}

/// Read every source up to the transfer limit.
pub(super) fn prepare(sources: Vec<Input>, limit: u64, bar: &ProgressBar) -> Prepared {
    let mut p = Prepared::default();
    let mut transfers = 0u64;
    let mut done_bytes = 0u64;
    'sources: for src in sources {
        for item in src.events {
            let event = match item {
                Ok((_, event)) => event,
                Err((line, reason)) => {
                    p.bad_lines += 1;
                    if p.bad_line_samples.len() < BAD_LINES_LISTED {
                        let reason = crate::event::mask_digit_runs(&reason);
                        p.bad_line_samples.push(BadLine { file: src.name.clone(), line, reason });
                    }
                    continue;
                }
            };
            let (route, key): (Route, Box<str>) = match &event {
                Event::Transfer(t) => {
                    if transfers >= limit {
                        p.stopped_at_limit = true;
                        break 'sources;
                    }
                    transfers += 1;
                    (Route::Transfer { id: t.bank_tran_id.as_str().into() }, t.fintech_use_num.as_str().into())
                }
                Event::Label(l) => (Route::Label, l.payee_key().into()),
                other => (Route::Context, other.account().unwrap_or_default().into()),
            };
            let start = p.bytes.len();
            event.write_json(&mut p.bytes);
            let time_ms = event.time().millis();
            p.records.push(Outgoing { route, time_ms, key, payload: start..p.bytes.len() });
            if p.records.len() % 4096 == 0 {
                bar.set_position(done_bytes + src.position.load(Ordering::Relaxed));
            }
        }
        done_bytes += src.size;
        bar.set_position(done_bytes);
    }
    p
}

pub(super) fn produce(
    producer: &ThreadedProducer<Delivery>,
    prepared: &Prepared,
    opts: &LoadOptions,
    notes: &Sender<Note>,
    bar: &ProgressBar,
    view: &ReaderView,
) -> Result<Produced, LoadError> {
    let mut p = Produced::default();
    let pacer = opts.rate.map(|per_second| Pacer { per_second });
    let topics = &opts.topics;
    // With a speed: the first event's time and when it went. What follows
    // the last transfer (fraud reports, dated weeks later) goes at once:
    // nothing waits on it.
    let mut clock: Option<(i64, Instant)> = None;
    let last_transfer = prepared.records.iter().rposition(|r| matches!(r.route, Route::Transfer { .. }));
    for (n, record) in prepared.records.iter().enumerate() {
        let payload = &prepared.bytes[record.payload.clone()];
        if let (Some(factor), true) = (opts.speed, last_transfer.is_some_and(|last| n <= last)) {
            let (first_ms, started) = *clock.get_or_insert((record.time_ms, Instant::now()));
            let due = Duration::try_from_secs_f64((record.time_ms - first_ms).max(0) as f64 / 1e3 / factor)
                .unwrap_or(Duration::MAX);
            if let Some(wait) = due.checked_sub(started.elapsed()).filter(|d| !d.is_zero()) {
                std::thread::sleep(wait);
            }
        }
        match &record.route {
            Route::Transfer { id } => {
                if let (Some(pacer), Some(first)) = (pacer, p.first_send) {
                    if let Some(wait) = pacer.wait(p.transfers, first.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let settled = || view.settled.load(Ordering::Relaxed);
                p.in_flight_waits += u64::from(wait_for_slot(p.transfers, opts.max_in_flight, opts.drain, settled));
                let deadline_ms = unix_ms() + opts.budget.as_millis() as u64;
                let headers = OwnedHeaders::new_with_capacity(2)
                    .insert(Header { key: HEADER_CORRELATION_ID, value: Some(id.as_ref()) })
                    .insert(Header { key: HEADER_DEADLINE_MS, value: Some(&deadline_ms.to_string()) });
                let at = Instant::now();
                let _ = notes.send(Note::Sent { id: id.clone(), at });
                p.first_send.get_or_insert(at);
                p.last_send = Some(at);
                p.queue_full_waits += send(producer, &topics.transfers, &record.key, payload, Some(headers))?;
                p.transfers += 1;
            }
            Route::Label => {
                p.queue_full_waits += send(producer, &topics.labels, &record.key, payload, None)?;
                p.labels += 1;
            }
            Route::Context => {
                p.queue_full_waits += send(producer, &topics.context_events, &record.key, payload, None)?;
                p.context_events += 1;
            }
        }
        if n % 256 == 0 {
            bar.set_position(n as u64);
            let got = view.answered.load(Ordering::Relaxed);
            bar.set_message(format!("sent {} transfers, answered {got}", p.transfers));
        }
    }
    bar.set_position(prepared.records.len() as u64);
    Ok(p)
}

/// Hand one message to the producer, waiting while its queue is full.
/// Returns how many times it had to wait.
pub(super) fn send(
    producer: &ThreadedProducer<Delivery>,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<u64, LoadError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    let mut waits = 0;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(waits),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                waits += 1;
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(LoadError::kafka(format!("cannot produce to {topic}"))(e)),
        }
    }
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The send schedule: transfer `n` (from 0) is due `n / per_second` after the
/// first, so one slow send delays nothing after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacer {
    pub(super) per_second: f64,
}

impl Pacer {
    pub(super) fn due(self, n: u64) -> Duration {
        Duration::try_from_secs_f64(n as f64 / self.per_second).unwrap_or(Duration::MAX)
    }

    /// How long to sleep before transfer `n`, `elapsed` after the first;
    /// `None` when it is due or overdue.
    pub(super) fn wait(self, n: u64, elapsed: Duration) -> Option<Duration> {
        self.due(n).checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}
