//! The mutating admission webhook: `inject` decides, `admission` speaks
//! AdmissionReview, `server` serves it over HTTPS.

pub mod admission;
pub mod inject;
pub mod mesh;
pub mod reinvoke;
pub mod server;
