//! Admin commands that run instead of the proxy.

pub mod decrypt;
pub mod doctor;
mod error;
pub mod listing;
pub mod migrate;
mod open_uploads;
pub mod probe;
pub mod rewrap;
pub mod scan;
pub mod seal;
pub mod wait_idle;
pub mod wait_ready;

pub use error::CommandError;
