//! Records and output: the compact record each event is generated as, the
//! sink that numbers them, and the writer that sorts a day's records by time
//! and renders them as JSON lines (transfer ids are assigned here, in output
//! order).

use super::*;

/// One event before rendering: 40 bytes, so a million-account day fits in
/// about 100 MB. Which fields mean what depends on `kind`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec {
    /// Seconds since the first day's midnight KST.
    pub(super) t: u32,
    /// Sender account index (`u32::MAX` for labels).
    pub(super) account: u32,
    /// Generation order: the last tie-breaker, and how labels find their transfer.
    pub(super) ord: u32,
    /// Transfer amount or new limit, won.
    pub(super) amount: u32,
    pub(super) device: u32,
    /// Payee id (transfers and labels).
    pub(super) payee: u32,
    /// Labels: `ord` of the reported transfer.
    pub(super) link: u32,
    /// IPv4 address, 0 = none.
    pub(super) ip: u32,
    pub(super) kind: RecKind,
    pub(super) channel: Channel,
    pub(super) purpose: TransferPurpose,
    /// Institution index for `bank_tran_id`.
    pub(super) inst: u8,
    pub(super) typology: Typology,
}

impl Default for Rec {
    /// Zeros, and a genuine mobile-app transfer: every record pushed names
    /// its own kind, so only the fields a kind leaves unset keep these.
    fn default() -> Self {
        Rec {
            t: 0,
            account: 0,
            ord: 0,
            amount: 0,
            device: 0,
            payee: 0,
            link: 0,
            ip: 0,
            kind: RecKind::Transfer { labelled: false },
            channel: Channel::MobileApp,
            purpose: TransferPurpose::Transfer,
            inst: 0,
            typology: Typology::Genuine,
        }
    }
}

pub(super) struct Sink {
    pub(super) recs: Vec<Rec>,
    pub(super) next_ord: u32,
    /// End of the traffic window: later non-label records are not generated.
    pub(super) end: u32,
    pub(super) overflow: bool,
}

impl Sink {
    pub(super) fn push(&mut self, mut r: Rec) -> Option<u32> {
        if !matches!(r.kind, RecKind::Label(_)) && r.t >= self.end {
            return None;
        }
        r.ord = self.next_ord;
        match self.next_ord.checked_add(1) {
            Some(n) => self.next_ord = n,
            None => self.overflow = true,
        }
        self.recs.push(r);
        Some(r.ord)
    }

    pub(super) fn context(&mut self, kind: RecKind, t: u32, account: u32, device: u32, ip: u32) {
        self.push(Rec { t, account, device, ip, kind, ..Rec::default() });
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

pub(super) struct Writer {
    pub(super) summary: GenerateSummary,
    /// Next transfer sequence number: assigned in output order, so ids grow
    /// with time and say nothing about how a transfer was generated.
    pub(super) next_seq: u64,
    /// `ord` -> sequence number, for transfers a label will refer to.
    pub(super) labelled: HashMap<u32, u64>,
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn new() -> Self {
        Writer {
            summary: GenerateSummary::default(),
            next_seq: 1,
            labelled: HashMap::new(),
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Sort the pending records and write those before `until` (all if `None`).
    pub(super) fn write_until<W: Write>(
        &mut self,
        world: &World,
        recs: &mut Vec<Rec>,
        until: Option<u32>,
        out: &mut W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), GenerateError> {
        recs.sort_unstable_by_key(|r| (r.t, r.account, r.ord));
        let cut = until.map_or(recs.len(), |u| recs.partition_point(|r| r.t < u));
        for r in &recs[..cut] {
            let event = self.render(world, r)?;
            serde_json::to_writer(&mut self.buf, &event).map_err(std::io::Error::from)?;
            self.buf.push(b'\n');
            self.summary.events += 1;
            if self.buf.len() >= 1 << 20 {
                self.flush(out)?;
                progress(self.summary.events);
            }
        }
        self.flush(out)?;
        recs.drain(..cut);
        Ok(())
    }

    pub(super) fn flush<W: Write>(&mut self, out: &mut W) -> Result<(), GenerateError> {
        out.write_all(&self.buf)?;
        self.summary.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub(super) fn render(&mut self, w: &World, r: &Rec) -> Result<Event, GenerateError> {
        let time = w.time(r.t);
        let s = &mut self.summary;
        if s.first_time.is_none() {
            s.first_time = Some(time);
        }
        s.last_time = Some(time);
        let device = (r.device != 0).then(|| w.device_id(r.device));
        let ip = (r.ip != 0).then(|| ip_string(r.ip));
        let acct = || fintech_use_num(r.account);
        let payee_fields = |payee: u32| {
            let bank = &BANKS[w.bank_of(payee)];
            (bank.code.to_owned(), w.account_number(payee, bank))
        };
        if !matches!(r.kind, RecKind::Transfer { .. } | RecKind::Label(_)) {
            s.context_events += 1;
        }
        let ev = match r.kind {
            RecKind::Transfer { labelled } => {
                let seq = self.next_seq;
                if seq > 999_999_999 {
                    return Err(GenerateError::Capacity("more than 999,999,999 transfers".into()));
                }
                self.next_seq += 1;
                s.transfers += 1;
                if r.typology != Typology::Genuine {
                    s.fraud_transfers += 1;
                    *s.frauds_by_typology.entry(r.typology.label().to_owned()).or_insert(0) += 1;
                }
                if labelled {
                    self.labelled.insert(r.ord, seq);
                }
                let (bank, account) = payee_fields(r.payee);
                Event::Transfer(Transfer {
                    schema_version: SchemaVersion,
                    bank_tran_id: tran_id(r.inst, seq),
                    tran_dtime: time,
                    fintech_use_num: acct(),
                    tran_amt: Won::new(i64::from(r.amount.max(1))).map_err(GenerateError::Capacity)?,
                    recv_client_bank_code: bank,
                    recv_client_account_num: account,
                    recv_client_name: w.payee_name(r.payee),
                    channel: r.channel,
                    device_id: device,
                    ip,
                    transfer_purpose: r.purpose,
                })
            }
            RecKind::Label(status) => {
                let seq = *self
                    .labelled
                    .get(&r.link)
                    .ok_or_else(|| GenerateError::Capacity("label before its transfer".into()))?;
                s.labels += 1;
                if status == LabelStatus::Cleared {
                    s.false_reports += 1;
                }
                let (bank, account) = payee_fields(r.payee);
                Event::Label(Label {
                    schema_version: SchemaVersion,
                    bank_tran_id: tran_id(r.inst, seq),
                    report_dtime: time,
                    status,
                    typology: r.typology.label().to_owned(),
                    recv_client_bank_code: bank,
                    recv_client_account_num: account,
                })
            }
            RecKind::Login { success } => Event::Login(Login {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
                ip,
                success,
            }),
            RecKind::DeviceRegistered => Event::DeviceRegistered(DeviceRegistered {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device.unwrap_or_else(|| w.device_id(0)),
            }),
            RecKind::Certificate(action) => Event::Certificate(Certificate {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                action,
                device_id: device,
            }),
            RecKind::PhoneChanged => Event::PhoneChanged(PhoneChanged {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
            }),
            RecKind::RemoteApp { app } => Event::RemoteAppDetected(RemoteAppDetected {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
                app_name: REMOTE_APPS[usize::from(app) % REMOTE_APPS.len()].to_owned(),
            }),
            RecKind::LimitRaised => Event::LimitRaised(LimitRaised {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                new_limit: Won::new(i64::from(r.amount.max(1))).map_err(GenerateError::Capacity)?,
            }),
            RecKind::Ekyc => Event::EkycCompleted(EkycCompleted {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
            }),
        };
        Ok(ev)
    }
}
