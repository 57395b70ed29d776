//! `chatctl status`: GetStatus.

use std::path::Path;

use peerchat::v1 as pb;

use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let status = get(&mut client).await?;
    output::either(json, || format::status_json(&status), || format::status_text(&status))
}

pub(crate) async fn get(client: &mut Control) -> Result<pb::GetStatusResponse, Error> {
    client::call("report its status", ANSWER_TIMEOUT, client.get_status(pb::GetStatusRequest {}))
        .await
}
