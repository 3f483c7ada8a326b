//! The local cloud of orderflow: the AWS-API emulators (moto, LocalStack) and the tools they need, CloudFormation
//! deploys of `infra/`, and a local runner that plays Lambda for the real function binaries (Runtime API, SQS and
//! DynamoDB stream event sources, EventBridge async invokes, an API Gateway HTTP API) with Lambda's semantics.
#![forbid(unsafe_code)]

pub mod aws;
pub mod cloud;
pub mod deploy;
pub mod emulator;
pub mod faults;
pub mod http_gateway;
pub mod iac;
pub mod provider;
pub mod proxy;
pub mod runner;
pub mod runtime_api;
pub mod scenario;
pub mod sources;
pub mod tools;
