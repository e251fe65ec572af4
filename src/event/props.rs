//! Property tests of the decoder: any bytes are refused or read without a
//! panic, and every valid event (every field anywhere inside its bound)
//! reads back as itself. The events come from the builders, with their
//! values drawn from the bounds table (`bounds.rs`).

use proptest::prelude::*;

use super::build::{context, label, transfer};
use super::{CertificateAction, Channel, Event, EventError, EventTime, TransferPurpose, MAX_AMOUNT_WON};

/// Whole seconds between 1990 and 2100 (the wire carries no milliseconds).
fn time() -> impl Strategy<Value = EventTime> {
    (631_152_000i64..4_102_444_800).prop_map(EventTime::from_secs)
}

fn account() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,24}"
}

fn device() -> impl Strategy<Value = String> {
    // Printable, not blank (a blank device id is read as none), at most 64 bytes.
    prop_oneof!["[!-~][ -~]{0,63}", "[가-힣][가-힣a-z]{0,20}"]
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string())
    ]
}

fn transfer_event() -> impl Strategy<Value = Event> {
    let ids = (
        "[A-Za-z0-9]{1,20}",
        account(),
        "[0-9]{3}",
        "[0-9]{1,4}(-[0-9]{1,4}){0,3}",
        "[가-힣A-Za-z][가-힣A-Za-z ()]{0,19}",
    );
    let rest =
        (1..=MAX_AMOUNT_WON, time(), proptest::option::of(device()), proptest::option::of(ip()), 0..3usize, 0..3usize);
    (ids, rest).prop_map(|((id, acct, bank, payee, name), (amount, at, dev, addr, channel, purpose))| {
        let mut b = transfer(&id)
            .account(&acct)
            .payee(&bank, &payee)
            .payee_name(&name)
            .amount(amount)
            .at_time(at)
            .channel([Channel::MobileApp, Channel::InternetBanking, Channel::OpenBanking][channel])
            .purpose([TransferPurpose::Transfer, TransferPurpose::Payment, TransferPurpose::Recovery][purpose]);
        if let Some(d) = dev {
            b = b.device(&d);
        }
        if let Some(i) = addr {
            b = b.ip(&i);
        }
        b.build()
    })
}

fn context_event() -> impl Strategy<Value = Event> {
    let fields = (account(), time(), proptest::option::of(device()), proptest::option::of(ip()));
    (fields, 0..8usize, any::<bool>(), 1..=MAX_AMOUNT_WON, "[!-~][ -~]{0,63}", device()).prop_map(
        |((acct, at, dev, addr), kind, success, limit, app, registered)| {
            let mut c = context(&acct).at_time(at);
            if let Some(d) = &dev {
                c = c.device(d);
            }
            if let Some(i) = &addr {
                c = c.ip(i);
            }
            match kind {
                0 => c.login(success),
                1 => c.device(&registered).device_registered(),
                2 => c.certificate(CertificateAction::Issued),
                3 => c.cert_reissued(),
                4 => c.phone_changed(),
                5 => c.remote_app(&app),
                6 => c.limit_raised(limit),
                _ => c.ekyc(),
            }
        },
    )
}

fn label_event() -> impl Strategy<Value = Event> {
    ("[A-Za-z0-9]{1,20}", time(), "[0-9]{3}", "[A-Za-z0-9]{1,16}", "[A-Za-z0-9_]{0,32}", any::<bool>()).prop_map(
        |(id, at, bank, payee, typology, cleared)| {
            let l = label(&id).at_time(at).payee(&bank, &payee).typology(&typology);
            if cleared { l.cleared() } else { l }.build()
        },
    )
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![transfer_event(), context_event(), label_event()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_valid_event_reads_back_as_itself(event in any_event()) {
        let json = event.to_json();
        let back = Event::from_json(json.as_bytes());
        prop_assert!(back.is_ok(), "{json}: {:?}", back.err());
        prop_assert_eq!(back.unwrap(), event);
    }

    #[test]
    fn any_bytes_are_read_or_refused_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Event::from_json(&bytes);
    }

    /// Valid events with bytes changed, cut or repeated: the near misses a
    /// broken producer sends, which random bytes almost never are.
    #[test]
    fn damaged_events_are_refused_with_a_reason_or_still_valid(
        event in any_event(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = event.to_json().into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => {
                    let tail = bytes[i..].to_vec();
                    bytes.extend_from_slice(&tail);
                }
            }
        }
        match Event::from_json(&bytes) {
            Ok(e) => prop_assert!(e.validate().is_ok()),
            Err(EventError::Invalid { field, reason, .. }) => prop_assert!(!field.is_empty() && !reason.is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
