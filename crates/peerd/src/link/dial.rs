//! The dialing side of a link: look the peer up, connect, say hello, wait
//! for welcome, then hand the link to the driver.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::TokioIo;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::LinkId;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Endpoint, Uri};

use super::{
    HANDSHAKE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_FRAME_BYTES, SEND_QUEUE,
};
use crate::control::error::ControlError;
use crate::directory::{self, Directories, Listing};
use crate::driver::{DriverTx, Input};
use crate::error::with_causes;
use crate::known_peers::{KnownPeers, Verdict, changed_message};
use crate::link::inbound::Inbound;
use crate::tls::{self, Credentials, PublicKey};

/// How long connecting to a peer's address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Dials peers; cheap to clone (the directory channels are shared).
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) directory: Directories,
    pub(crate) credentials: Credentials,
    pub(crate) known: KnownPeers,
}

impl Dialer {
    /// Dials `name` for the driver's `link` and reports the outcome as
    /// `Input::Dialed`; the driver reads the link from then on.
    pub(crate) async fn dial(
        self,
        link: LinkId,
        name: Name,
        me: Name,
        resume: bool,
        driver: DriverTx,
    ) {
        match self.handshake(&name, &me, resume).await {
            Ok((peer, out, inbound)) => {
                let result = Ok((peer, out, Inbound::new(inbound)));
                let _ = driver.send(Input::Dialed { link, result }).await;
            }
            Err(e) => {
                tracing::info!(peer = %name, error = %e, "dial failed");
                let _ = driver.send(Input::Dialed { link, result: Err(e) }).await;
            }
        }
    }

    async fn handshake(
        self,
        name: &Name,
        me: &Name,
        resume: bool,
    ) -> Result<(Name, mpsc::Sender<pb::Frame>, Streaming<pb::Frame>), ControlError> {
        let peer = match directory::lookup(&self.directory, name.as_str()).await {
            Listing::Online(peer) => peer,
            Listing::NotOnline => return Err(ControlError::NotOnline(name.to_string())),
            Listing::Unknown(why) => return Err(ControlError::DirectoryUnreachable(why)),
        };
        // A busy peer is dialed all the same: it may be busy with us (a
        // conversation whose link was lost), and only it can tell.
        let address = peer.address;
        let listed: PublicKey =
            peer.public_key.as_slice().try_into().map_err(|_| ControlError::Refused {
                name: name.to_string(),
                why: "the directory lists no key for it".into(),
            })?;
        // The directory could be wrong or lying: a key that differs from the
        // one we talked to before is the user's call, not ours.
        if let Verdict::Changed { known } = self.known.check(name, &listed) {
            return Err(ControlError::KeyChanged(changed_message(name, &known, &listed)));
        }
        let unreachable = |why: String| ControlError::Unreachable {
            name: name.to_string(),
            address: address.clone(),
            why,
        };
        let addr: SocketAddr =
            address.parse().map_err(|e| unreachable(format!("bad address: {e}")))?;
        let tls = TlsConnector::from(
            self.credentials.client_config(listed).map_err(|e| unreachable(e.to_string()))?,
        );
        // The URI is required by the API but unused: the connector dials.
        let endpoint = Endpoint::from_static("http://peer.invalid")
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => return Err(unreachable("no answer in time".into())),
            Ok(Err(e)) => {
                let why = with_causes(e.to_string(), std::error::Error::source(&e));
                if why.contains(tls::WRONG_KEY) || why.contains("BadSignature") {
                    return Err(ControlError::WrongKey {
                        name: name.to_string(),
                        address: address.clone(),
                        why,
                    });
                }
                return Err(unreachable(why));
            }
            Ok(Ok(channel)) => channel,
        };
        let mut client = pb::chat_client::ChatClient::new(channel)
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES);
        let (out, rx) = mpsc::channel(SEND_QUEUE);
        let hello = pb::Hello {
            name: me.to_string(),
            to: name.to_string(),
            version: super::PROTOCOL_VERSION,
            resume,
        };
        // The queue is new and empty: this cannot fail.
        let _ = out.try_send(pb::Frame { kind: Some(pb::frame::Kind::Hello(hello)) });
        let refused = |why: String| ControlError::Refused { name: name.to_string(), why };
        let response =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.converse(ReceiverStream::new(rx)))
                .await
            {
                Err(_) => return Err(refused("no answer to hello in time".into())),
                Ok(Err(s)) if is_busy(&s) => {
                    return Err(ControlError::Busy(name.to_string()));
                }
                Ok(Err(s)) => return Err(refused(s.message().to_owned())),
                Ok(Ok(r)) => r,
            };
        let mut inbound = response.into_inner();
        let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(refused("no welcome in time".into())),
            Ok(Err(s)) if is_busy(&s) => {
                return Err(ControlError::Busy(name.to_string()));
            }
            Ok(Err(s)) => return Err(refused(s.message().to_owned())),
            Ok(Ok(None)) => return Err(refused("the stream ended before welcome".into())),
            Ok(Ok(Some(f))) => f,
        };
        let Some(pb::frame::Kind::Welcome(welcome)) = welcome.kind else {
            return Err(refused("the first frame was not a welcome".into()));
        };
        let callee = Name::parse(&welcome.name).map_err(|e| refused(e.to_string()))?;
        if callee != *name {
            return Err(refused(format!("the peer at {address} is {callee}, not {name}")));
        }
        if let Err(e) = self.known.remember(&callee, &listed) {
            tracing::warn!(error = %e, "cannot record the peer's key");
        }
        Ok((callee, out, inbound))
    }
}

/// The callee's refusal because it is in another conversation (not, say,
/// because its queue of pending dials is full).
fn is_busy(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message().contains("busy")
}
