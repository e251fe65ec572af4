//! The health thread: asks the brokers for metadata every second and flips
//! the readiness flag `/readyz` and `fds_broker_up` follow.

use super::*;

/// Ask the brokers for metadata every second: the truth behind `/readyz`.
pub(super) fn spawn_health_watch(
    opts: &PipelineOptions,
    health: Arc<Health>,
    stop: StopFlag,
) -> Result<JoinHandle<()>, PipelineError> {
    let client: BaseConsumer =
        opts.connection.client_config(&[("group.id", "fds-health")]).create().map_err(|source| {
            PipelineError::Client { role: "health client", brokers: opts.connection.brokers.clone(), source }
        })?;
    let topic = opts.topics.decisions.clone();
    Ok(std::thread::Builder::new()
        .name("fds-health".into())
        .spawn(move || {
            let mut was_up = None;
            while !stop.load(Ordering::Relaxed) {
                let up = client.fetch_metadata(Some(&topic), Duration::from_secs(2)).is_ok();
                if was_up != Some(up) {
                    if up {
                        tracing::info!("brokers reachable");
                    } else {
                        tracing::error!("brokers unreachable; decisions wait in the producer and are retried");
                    }
                    was_up = Some(up);
                }
                // The gauges follow the flags at each scrape (`Health::publish`).
                health.set_broker_up(up);
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .expect("spawn health thread"))
}
