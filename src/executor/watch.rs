//! Reading the change log: the events of every version, in version order.

use super::blob::BlobRef;
use super::command::{decode_record, Event, EventKind, KeyRange, PatchFormat};
use super::error::{Error, Result};
use super::keys::{self, CF_CHANGES};
use super::read::{seek_visible, View};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPage {
    /// Version order; key order within a version. A version's events are never split
    /// across pages.
    pub events: Vec<Event>,
    /// Where the next page starts: every version below it was examined.
    pub next_version: u64,
}

impl View<'_> {
    /// The events at versions >= `from_version` touching `range`. `events_max` is capped
    /// to `watch_events_max` (0 means the cap) and is exceeded only when a single version
    /// alone has more events, because a version's events are never split.
    pub fn watch_events(
        &self,
        range: &KeyRange,
        from_version: u64,
        events_max: usize,
    ) -> Result<WatchPage> {
        if from_version < self.oldest_version {
            return Err(Error::Compacted {
                oldest_version: self.oldest_version,
            });
        }
        if range.is_inverted() {
            return Err(Error::InvalidArgument(format!("inverted range {range:?}")));
        }
        let events_max = match events_max {
            0 => self.options.watch_events_max,
            n => n.min(self.options.watch_events_max),
        };
        let mut events: Vec<Event> = Vec::new();
        let mut iter = self.iterator(CF_CHANGES);
        iter.seek(keys::version_key(from_version));
        for _ in 0..self.options.watch_versions_scanned_max {
            let Some(version_key) = iter.key() else {
                iter.status()?;
                return Ok(self.caught_up(events, from_version));
            };
            let version = keys::decode_u64(version_key, "change log key")?;
            assert!(
                version <= self.current_version,
                "change log ahead of current_version"
            );
            let value = iter.value().expect("a valid iterator has a value");
            let logged: Vec<Event> = decode_record(value, "change log entry")?;
            let before = events.len();
            for mut event in logged.into_iter().filter(|e| range.contains(&e.key)) {
                match event.kind {
                    EventKind::PutPatched => {
                        let logged = event.value.as_deref().unwrap_or_default();
                        let (format, patch): (PatchFormat, Vec<u8>) =
                            decode_record(logged, "patched event")?;
                        event.value = Some(self.written_at(&event.key, version)?);
                        event.kind = EventKind::Put;
                        event.patch = Some((format, patch));
                    }
                    EventKind::PutRef => {
                        event.value = Some(self.written_at(&event.key, version)?);
                        event.kind = EventKind::Put;
                    }
                    EventKind::PutBlob => {
                        // The change log keeps only versions the collector keeps, so the
                        // version's chunks are still there.
                        let blob = BlobRef::decode(event.value.as_deref().unwrap_or_default())?;
                        event.kind = EventKind::Put;
                        event.value = Some(self.blob_bytes(&blob)?);
                    }
                    EventKind::Put | EventKind::Delete => {}
                }
                events.push(event);
            }
            let added = events.len() - before;
            if before > 0 && events.len() > events_max {
                events.truncate(before); // This version goes whole to the next page.
                return Ok(WatchPage {
                    events,
                    next_version: version,
                });
            }
            if added > 0 && events.len() >= events_max {
                return Ok(WatchPage {
                    events,
                    next_version: version + 1,
                });
            }
            iter.next();
        }
        // Out of scan budget: resume at the first version not examined.
        let next_version = match iter.key() {
            Some(version_key) => keys::decode_u64(version_key, "change log key")?,
            None => {
                iter.status()?;
                return Ok(self.caught_up(events, from_version));
            }
        };
        Ok(WatchPage {
            events,
            next_version,
        })
    }

    /// The value `key` was given at `version`. The change log keeps only versions the
    /// collector keeps (every version at or above `oldest_version`), so it is there.
    fn written_at(&self, key: &[u8], version: u64) -> Result<Vec<u8>> {
        let mut data = self.iterator(keys::CF_DATA);
        let written = seek_visible(&mut data, key, version)?
            .filter(|written| written.mod_version == version)
            .ok_or_else(|| Error::Corrupt("a change-log put without its data version".into()))?;
        match written.blob {
            Some(blob) => self.blob_bytes(&blob),
            None => written
                .value
                .ok_or_else(|| Error::Corrupt("a change-log put of a tombstone".into())),
        }
    }

    fn caught_up(&self, events: Vec<Event>, from_version: u64) -> WatchPage {
        let next_version = from_version.max(self.current_version + 1);
        WatchPage {
            events,
            next_version,
        }
    }
}
