//! A local AWS Lambda: runs the real function binaries of a SAM template through the Lambda Runtime API, with
//! Lambda's semantics, against any AWS-API endpoint (moto, LocalStack, ...). It owns the Runtime API server and the
//! function instances ([`runtime_api`]), reading the functions and their event sources from the template ([`iac`]),
//! the event sources (SQS, DynamoDB streams, EventBridge rules and schedules, with partial batch failures, retries
//! and on-failure destinations: [`sources`]), an API Gateway HTTP API ([`http_gateway`]), CloudFormation deploys
//! ([`deploy`]), and a fault proxy on the wire between the functions and their upstreams ([`proxy`], [`faults`]).
//! [`runner::Runner`] starts all of it from one [`runner::RunnerConfig`].
#![forbid(unsafe_code)]

pub mod authorizer;
pub mod aws;
pub mod deploy;
pub mod faults;
pub mod http_gateway;
pub mod iac;
pub mod pattern;
pub mod proxy;
pub mod runner;
pub mod runtime_api;
pub mod sources;
