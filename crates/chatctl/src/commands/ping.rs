//! `chatctl ping [--count N] [--interval SECONDS]`: round trips to the
//! current peer over the chat stream (not ICMP: the whole path a message
//! takes between the daemons), each printed, then a summary.

use std::path::Path;
use std::time::Duration;

use peerchat::v1 as pb;

use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(
    socket: &Path,
    json: bool,
    count: u32,
    interval: Duration,
) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let mut rtts = Vec::with_capacity(count as usize);
    let mut peer = String::new();
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let pong =
            client::call("ping the peer", ANSWER_TIMEOUT, client.ping(pb::PingRequest {})).await?;
        let rtt = Duration::from_micros(pong.rtt_us);
        if !json {
            output::line(&format::ping_text(&pong.peer, i + 1, rtt))?;
        }
        peer = pong.peer;
        rtts.push(rtt);
    }
    output::either(json, || format::ping_json(&peer, &rtts), || format::ping_summary(&peer, &rtts))
}
