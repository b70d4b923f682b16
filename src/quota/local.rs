//! Quota counters of this process (no `quotas.redis`): one map under one lock, so that a
//! request takes from all its counters or from none. The map is bounded: counters that
//! hold nothing (a bucket refilled, no call in progress, another day) are swept when it is
//! full, and a new counter beyond `max_counters` is refused.

use super::{Check, Counter, Full, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

enum Slot {
    /// GCRA's theoretical arrival time, in µs since `Local::epoch`.
    Rate { tat: u64 },
    /// Calls in progress.
    Held(u32),
    /// Requests counted on `day`.
    Daily { day: i64, used: u64 },
}

pub(super) struct Local {
    epoch: Instant,
    max: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Local {
    pub fn new(max: usize) -> Local {
        Local {
            epoch: Instant::now(),
            max,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Takes from every counter, or from none: `Some(full)` names the first without room.
    pub fn take(&self, counters: &[Counter]) -> Result<Option<Full>, StoreError> {
        let now = self.now_us();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let new = counters
            .iter()
            .filter(|c| !slots.contains_key(&c.key))
            .count();
        if slots.len() + new > self.max {
            slots.retain(|_, s| match s {
                Slot::Rate { tat } => *tat > now,
                Slot::Held(n) => *n > 0,
                Slot::Daily { .. } => true,
            });
            let today = counters.iter().find_map(|c| match c.check {
                Check::Daily { day, .. } => Some(day),
                _ => None,
            });
            if let Some(today) = today {
                slots.retain(|_, s| !matches!(s, Slot::Daily { day, .. } if *day != today));
            }
            if slots.len() + new > self.max {
                return Err(StoreError::CountersFull);
            }
        }
        // First decide, then take: nothing is taken from a request that does not fit.
        for (index, c) in counters.iter().enumerate() {
            let wait = match (c.check, slots.get(&c.key)) {
                (Check::Rate { tolerance_us, .. }, Some(Slot::Rate { tat })) => {
                    let allow_at = tat.saturating_sub(tolerance_us);
                    (now < allow_at).then(|| Duration::from_micros(allow_at - now))
                }
                (Check::Concurrent { limit, .. }, Some(Slot::Held(n))) => {
                    (*n >= limit).then_some(Duration::ZERO)
                }
                (Check::Daily { limit, day }, Some(Slot::Daily { day: d, used })) => {
                    (*d == day && *used >= limit).then_some(Duration::ZERO)
                }
                _ => None,
            };
            if let Some(wait) = wait {
                return Ok(Some(Full { index, wait }));
            }
        }
        for c in counters {
            let slot = slots.entry(c.key.clone()).or_insert(match c.check {
                Check::Rate { .. } => Slot::Rate { tat: now },
                Check::Concurrent { .. } => Slot::Held(0),
                Check::Daily { day, .. } => Slot::Daily { day, used: 0 },
            });
            match (c.check, slot) {
                (Check::Rate { interval_us, .. }, Slot::Rate { tat }) => {
                    *tat = (*tat).max(now) + interval_us;
                }
                (Check::Concurrent { .. }, Slot::Held(n)) => *n += 1,
                (Check::Daily { day, .. }, Slot::Daily { day: d, used }) => {
                    if *d != day {
                        *d = day;
                        *used = 0;
                    }
                    *used += 1;
                }
                // A rule whose kinds changed on reload: start its counter again.
                (_, slot) => {
                    *slot = match c.check {
                        Check::Rate { interval_us, .. } => Slot::Rate {
                            tat: now + interval_us,
                        },
                        Check::Concurrent { .. } => Slot::Held(1),
                        Check::Daily { day, .. } => Slot::Daily { day, used: 1 },
                    }
                }
            }
        }
        Ok(None)
    }

    /// Gives back the places of finished calls.
    pub fn release(&self, keys: &[String]) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if let Some(Slot::Held(n)) = slots.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    slots.remove(k);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}
