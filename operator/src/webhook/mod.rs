//! The mutating admission webhook: `inject` decides, `admission` speaks
//! AdmissionReview, `server` serves it over HTTPS, `notify` turns denials
//! and warnings into events on the pod's workload.

pub mod admission;
pub mod inject;
pub mod mesh;
pub mod notify;
pub mod reinvoke;
pub mod server;
