//! Outputs of a room beyond its participants: recordings of the composite and the full mix.
//! They tap the room's encoded video and mixed audio, so a recording costs a mux, not an encode,
//! when the container takes the room's codec.

pub mod egress;
pub mod recording;
