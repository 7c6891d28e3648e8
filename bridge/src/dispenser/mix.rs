//! Mixed devices: a device whose bytes are the XOR of equal-length blocks taken, exactly once,
//! from each of several attached cards (`--mix qrng0,qrng1`).
//!
//! Why: the XOR of independent sources is at least as unpredictable as the best of them, so one
//! card that is biased, stuck or (worse) predictable to an attacker cannot make the output worse
//! than the other card alone (docs/api.md "Mixed devices").
//!
//! How: [`MixSource`] is a [`RingSource`] whose bytes come from its members' devices, not from a
//! ring. A read takes up to the requested length from each member the way any reader does (under
//! the member's lock, after its health check, only when no direct reader is queued on it, so the
//! mix never jumps a member's queue), XORs the common length and keeps what one member gave beyond
//! it (its *pending* bytes) for the next read. So every member byte goes either into exactly one
//! mixed byte or stays pending; none is ever served raw too. Member bytes count as served by the
//! member in its metrics.
//!
//! Health (from the members' device states, re-read at every status poll of the mix device):
//! - default (all members): the mix is `ok` only while every member can serve; a failed, stopped,
//!   broken or missing member makes the mix `failed` (reason: that member's, `device-gone` when it
//!   is not attached), and a member's stale heartbeat makes the mix `degraded`. Pending bytes of a
//!   member stay pending (they passed that member's health tests before it failed).
//! - `degrade` (`--mix-degrade`): the mix XORs the members that can serve now, and is `failed` only
//!   when none can. Pending bytes of a member that is left out are dropped (their partners are
//!   gone). The trade-off: the mix keeps serving, but while a member is out its output is only as
//!   good as the remaining ones (one member left: that card's own bytes).
//!
//! Locks: the mix device's lock is held while a member's is taken; members never take the mix's,
//! and a mix cannot be a member of a mix, so the order is fixed. Members are looked up in the
//! dispenser's map with `try_read` only (a status poll runs under the mix's lock, and a blocking
//! read could wait behind a writer that waits behind a reader waiting for that lock).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use qrng_ring as ring;

use super::device::{lock, Device};
use super::{DeviceState, Inner, RingSource};

/// Highest wire value is worst: the order in which member states decide the mix's state.
fn severity(s: DeviceState) -> u8 {
    match s {
        DeviceState::Ok => 0,
        DeviceState::Degraded => 1,
        DeviceState::Starting => 2,
        DeviceState::Stopped => 3,
        DeviceState::Failed => 4,
    }
}

struct Member {
    name: String,
    dev: Option<Arc<Device>>,
    /// Bytes taken from this member beyond what the other members gave so far.
    pending: VecDeque<u8>,
}

/// What one member looks like now.
struct MemberView {
    state: DeviceState,
    status: Option<ring::StatusSnapshot>,
    /// Ring reason for a failed or stopped member (`device-gone` when not attached).
    reason: ring::Reason,
}

/// The source of a mixed device (module docs).
pub(super) struct MixSource {
    members: Vec<Member>,
    degrade: bool,
    dispenser: Weak<Inner>,
    /// Bytes dropped: pending bytes of members left out under `degrade`.
    dropped: u64,
    last_state: Option<DeviceState>,
}

impl MixSource {
    pub(super) fn new(dispenser: Weak<Inner>, members: &[String], degrade: bool) -> MixSource {
        let members = members
            .iter()
            .map(|n| Member { name: n.clone(), dev: None, pending: VecDeque::new() })
            .collect();
        let mut s = MixSource { members, degrade, dispenser, dropped: 0, last_state: None };
        s.resolve();
        s
    }

    /// (Re-)finds members that are not attached or were detached (hot-plug).
    fn resolve(&mut self) {
        let Some(inner) = self.dispenser.upgrade() else { return };
        let Ok(map) = inner.devices.try_read() else { return };
        for m in &mut self.members {
            if m.dev.as_ref().is_none_or(|d| d.stop.load(Ordering::Acquire)) {
                m.dev = map.get(&m.name).cloned();
            }
        }
    }

    fn view(m: &Member) -> MemberView {
        let gone = MemberView {
            state: DeviceState::Failed,
            status: None,
            reason: ring::Reason::DeviceGone,
        };
        let Some(dev) = m.dev.as_ref().filter(|d| !d.stop.load(Ordering::Acquire)) else {
            return gone;
        };
        let st = lock(&dev.state);
        let state = if st.broken { DeviceState::Failed } else { st.health };
        let reason = match (&st.status, st.broken) {
            (_, true) => ring::Reason::Other,
            (Some(s), false) => s.reason,
            (None, false) => ring::Reason::None,
        };
        MemberView { state, status: st.status.clone(), reason }
    }

    fn can_serve(state: DeviceState) -> bool {
        matches!(state, DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting)
    }

    /// The members a read XORs now: all of them, or (with `degrade`) those that can serve. Empty
    /// when the mix cannot serve. Drops the pending bytes of members left out.
    fn active(&mut self) -> Vec<usize> {
        let views: Vec<MemberView> = self.members.iter().map(Self::view).collect();
        let serving: Vec<usize> =
            (0..views.len()).filter(|&i| Self::can_serve(views[i].state)).collect();
        if !self.degrade {
            return if serving.len() == self.members.len() { serving } else { Vec::new() };
        }
        for (i, m) in self.members.iter_mut().enumerate() {
            if !serving.contains(&i) && !m.pending.is_empty() {
                self.dropped += m.pending.len() as u64;
                m.pending.clear();
            }
        }
        serving
    }

    /// Bytes member `m` could give now without jumping its queue.
    fn ready(m: &Member) -> usize {
        let Some(dev) = &m.dev else { return 0 };
        let mut st = lock(&dev.state);
        if st.broken || st.check_servable(&dev.name).is_err() || !st.waiters.is_empty() {
            return 0;
        }
        st.carry.len() + st.source.available().unwrap_or(0)
    }

    /// Tops member `m`'s pending bytes up towards `want`, taking from its device.
    fn top_up(m: &mut Member, want: usize) {
        let need = want.saturating_sub(m.pending.len());
        let Some(dev) = &m.dev else { return };
        if need == 0 {
            return;
        }
        let mut st = lock(&dev.state);
        if st.broken || st.check_servable(&dev.name).is_err() || !st.waiters.is_empty() {
            return;
        }
        let mut got = Vec::with_capacity(need);
        // An error fails the member (its own state machine); the mix sees it at its next poll.
        if st.fill_checked(&dev.name, &mut got, need).is_ok() && !got.is_empty() {
            dev.metrics.bytes_served.fetch_add(got.len() as u64, Ordering::Relaxed);
            m.pending.extend(got);
        }
    }
}

impl RingSource for MixSource {
    fn available(&mut self) -> ring::Result<usize> {
        let active = self.active();
        Ok(active
            .iter()
            .map(|&i| self.members[i].pending.len() + Self::ready(&self.members[i]))
            .min()
            .unwrap_or(0))
    }

    fn read(&mut self, buf: &mut [u8]) -> ring::Result<usize> {
        let active = self.active();
        if active.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        for &i in &active {
            Self::top_up(&mut self.members[i], buf.len());
        }
        let n = active.iter().map(|&i| self.members[i].pending.len()).min().unwrap_or(0);
        let n = n.min(buf.len());
        buf[..n].fill(0);
        for &i in &active {
            for (d, s) in buf[..n].iter_mut().zip(self.members[i].pending.drain(..n)) {
                *d ^= s;
            }
        }
        Ok(n)
    }

    fn status(&mut self) -> ring::Result<ring::StatusSnapshot> {
        self.resolve();
        let views: Vec<MemberView> = self.members.iter().map(Self::view).collect();
        let considered: Vec<&MemberView> = if self.degrade {
            let serving: Vec<&MemberView> =
                views.iter().filter(|v| Self::can_serve(v.state)).collect();
            if serving.is_empty() {
                views.iter().collect()
            } else {
                serving
            }
        } else {
            views.iter().collect()
        };
        let worst = considered
            .iter()
            .max_by_key(|v| severity(v.state))
            .map(|v| (v.state, v.reason))
            .unwrap_or((DeviceState::Failed, ring::Reason::DeviceGone));
        let (health, reason) = match worst.0 {
            DeviceState::Failed => (ring::Health::Failed, worst.1),
            DeviceState::Stopped => (ring::Health::Stopped, worst.1),
            DeviceState::Starting => (ring::Health::Starting, ring::Reason::None),
            DeviceState::Ok | DeviceState::Degraded => (ring::Health::Ok, ring::Reason::None),
        };
        if self.last_state != Some(worst.0) {
            let which: Vec<String> = self
                .members
                .iter()
                .zip(&views)
                .map(|(m, v)| format!("{}={}", m.name, v.state))
                .collect();
            tracing::info!(members = %which.join(","), "mixed device: member states");
            self.last_state = Some(worst.0);
        }
        let snaps: Vec<&ring::StatusSnapshot> =
            considered.iter().filter_map(|v| v.status.as_ref()).collect();
        let ids: Vec<&ring::Identity> = snaps.iter().map(|s| &s.identity).collect();
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        let identity = ring::Identity {
            model: format!("xor({})", names.join(",")),
            serial: ids.iter().map(|i| i.serial.as_str()).collect::<Vec<_>>().join("+"),
            simulated: ids.iter().any(|i| i.simulated),
            extractor: "xor".to_owned(),
            ..ring::Identity::default()
        };
        // A member that never beat (0) or beat longest ago decides: staleness carries over.
        let heartbeat_ns = if snaps.len() < considered.len() {
            0
        } else {
            snaps.iter().map(|s| s.heartbeat_ns).min().unwrap_or(0)
        };
        let available = self.available()? as u64;
        Ok(ring::StatusSnapshot {
            epoch: snaps.iter().map(|s| s.epoch).max().unwrap_or(0),
            heartbeat_ns,
            health,
            reason,
            identity,
            params: snaps.first().map(|s| s.params).unwrap_or_default(),
            raw_bytes_read: snaps.iter().map(|s| s.raw_bytes_read).sum(),
            // The mix publishes as fast as its slowest member.
            bytes_published: snaps.iter().map(|s| s.bytes_published).min().unwrap_or(0),
            health_alarms: snaps.iter().map(|s| s.health_alarms).sum(),
            bytes_dropped: self.dropped,
            capacity: snaps.iter().map(|s| s.capacity).min().unwrap_or(0),
            head: 0,
            tail: available,
        })
    }
}
