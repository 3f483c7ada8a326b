//! `cargo xtask token --customer <id> | --admin [--minutes N]`: a token the local HTTP API accepts, signed by the
//! local issuer (its key in .local/issuer/, made on first use), with the claims of a Cognito access token.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use orderflow_domain::order::validate_customer_id;
use orderflow_local_cloud::issuer::{LocalIssuer, Subject};

use crate::project_root;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["customer", "admin"]))]
pub struct TokenArgs {
    /// A customer's token: its subject is this customer id.
    #[arg(long)]
    customer: Option<String>,
    /// An operator's token, with the scope orderflow/admin.
    #[arg(long)]
    admin: bool,
    /// How long the token is valid (Cognito's access tokens in infra/: 60 minutes).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    minutes: u64,
}

pub fn run(args: TokenArgs) -> Result<()> {
    let subject = match (args.customer, args.admin) {
        (Some(customer), false) => {
            if let Err(err) = validate_customer_id(&customer) {
                bail!("--customer {customer:?}: {}", err.message);
            }
            Subject::Customer(customer)
        }
        (None, true) => Subject::Operator,
        _ => bail!("give one of --customer <id> or --admin"),
    };
    let issuer = LocalIssuer::load_or_create(&project_root())?;
    println!("{}", issuer.token(&subject, Duration::from_secs(args.minutes * 60))?);
    Ok(())
}
