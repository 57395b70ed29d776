//! `chatctl list`: ListPeers, every page.

use std::path::Path;

use crate::error::Error;
use crate::{client, format, output};

pub(crate) async fn run(socket: &Path, json: bool, keys: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let (peers, you) = client::list_all(&mut client).await?;
    output::either(
        json,
        || format::list_json(&peers, &you),
        || format::list_text(&peers, &you, keys),
    )
}
