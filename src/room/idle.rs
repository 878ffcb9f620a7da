//! A room's media at rest: a room nobody is in (made by `PUT`, or emptied) runs no clock, mixer,
//! placeholder or bus thread and keeps its pipeline in `NULL`; the first join (or a recording or
//! egress) wakes it, and the last leave parks it again. `bash benches/idle-rooms.sh` measures it.

use super::{Room, RoomError};

/// A join or output setting up on a room's woken media (see [`Room::wake`]): the media stays
/// awake until it drops, by when the participant or output counts by itself.
pub(super) struct MediaUse<'a>(&'a Room);

impl Drop for MediaUse<'_> {
    fn drop(&mut self) {
        *self.0.media_users.lock().unwrap() -= 1;
    }
}

impl Room {
    /// Starts the room's media — video pipeline, room clock, placeholders, mixer — if idle
    /// (a room made by `PUT` runs nothing until its first join or output).
    ///
    /// # Errors
    /// [`RoomError::Video`] or [`RoomError::Audio`] when they cannot start.
    pub(super) fn wake(&self) -> Result<MediaUse<'_>, RoomError> {
        let mut users = self.media_users.lock().unwrap();
        if !self.video.started() {
            tracing::info!(room = %self.name, "room media starting");
        }
        self.video.start()?;
        self.audio.wake()?;
        *users += 1;
        Ok(MediaUse(self))
    }

    /// Idles the media of a room that nobody is in and that records and streams nothing (a room
    /// made by `PUT` whose participants left): no clock, mixer or placeholder thread runs and the
    /// pipeline is in `NULL` until the next join. Blocks up to a mixer tick (20 ms).
    pub(super) fn park_if_idle(&self) {
        let users = self.media_users.lock().unwrap();
        if *users > 0 || !self.is_empty() || self.outputs.running() || !self.video.started() {
            return;
        }
        tracing::info!(room = %self.name, "room media parked: nobody is in the room");
        self.video.park();
        self.audio.park();
        drop(users);
    }
}
