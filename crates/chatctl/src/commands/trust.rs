//! `chatctl trust NAME`: accept the key the directory now lists for NAME
//! in place of the one this daemon knew (after a `key changed` refusal).

use std::path::Path;

use peerchat::v1 as pb;
use peerchat_core::Name;

use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool, name: &str) -> Result<(), Error> {
    let name = Name::parse(name)?;
    let mut client = client::connect(socket).await?;
    let request = pb::TrustRequest { name: name.to_string() };
    let response = client::call("trust", ANSWER_TIMEOUT, client.trust(request)).await?;
    output::either(json, || format::trust_json(&response), || format::trust_text(&response))
}
