//! Client contexts: the producer's acknowledgement channel back to the
//! scoring thread, where a message came from, and how librdkafka's logs and
//! errors reach ours.

use super::*;

/// An acknowledgement (or failure) of one produced record, sent from the
/// producer's thread to the scoring thread.
pub(super) struct Ack {
    pub(super) source: Origin,
    pub(super) produced_at: Instant,
    /// On failure: the record to send again.
    pub(super) retry: Option<Retry>,
}

/// Where a consumed message came from: the offset to finish once its
/// outcome is safe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub(super) topic: Feed,
    pub(super) partition: i32,
    pub(super) offset: i64,
}

pub(super) struct Retry {
    pub(super) topic: String,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) error: KafkaError,
}

pub(super) struct AckContext {
    pub(super) acks: Mutex<Sender<Ack>>,
    pub(super) health: Arc<Health>,
}

/// librdkafka reports every failed connection attempt, many a second while a
/// broker is away. The health thread logs the transitions (unreachable,
/// reachable again) once; the client's own chatter goes to debug.
pub(super) fn client_log(role: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Critical as i32) {
        tracing::error!(role, fac, "librdkafka: {message}");
    } else {
        tracing::debug!(role, fac, ?level, "librdkafka: {message}");
    }
}

pub(super) fn client_error(role: &str, health: Option<&Health>, error: KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown)) {
        if let Some(h) = health {
            h.set_broker_up(false);
        }
    }
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)) {
        tracing::debug!(role, %error, reason, "kafka");
    } else {
        tracing::warn!(role, %error, reason, "kafka");
    }
}

/// The context of the helper clients (labels, read-back, health).
pub(super) struct Quiet(pub(super) &'static str);

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(self.0, level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(self.0, None, error, reason)
    }
}

impl ConsumerContext for Quiet {}

impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("producer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("producer", Some(&self.health), error, reason)
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<(Origin, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (source, produced_at) = *opaque;
        let retry = match result {
            Ok(_) => None,
            Err((error, msg)) => Some(Retry {
                topic: msg.topic().to_owned(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().unwrap_or_default().to_vec(),
                headers: msg.headers().map(|h| h.detach()),
                error: error.clone(),
            }),
        };
        // The receiver only goes away at the very end of shutdown.
        let _ = self.acks.lock().expect("ack channel lock").send(Ack { source, produced_at, retry });
    }
}
