//! orders-api: the HTTP API of orders and stock. A library beside its binary so that the fuzz targets and the
//! OpenAPI check drive the same [`handler::Api`] the Lambda runs.
#![forbid(unsafe_code)]

pub mod handler;
