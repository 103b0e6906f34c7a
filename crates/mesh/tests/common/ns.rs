//! Mesh peers running inside network namespaces, in this process.

use std::fs::File;

use peergrid_core::Keypair;
use peergrid_mesh::bulk::Receiver;
use peergrid_mesh::{Config, Mesh};

/// A peer whose sockets live in a namespace; its runtime stops when this is dropped.
pub struct NsPeer {
    pub mesh: Mesh,
    pub receiver: Receiver,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Start a peer inside namespace `ns`: a thread joins the namespace and runs a
/// runtime whose threads (spawned from it) inherit the namespace.
pub fn spawn_in(ns: &str, key: Keypair, config: Config) -> NsPeer {
    let path = format!("/run/netns/{ns}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let file = File::open(&path).expect("namespace file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mesh = Mesh::start(&key, config).await.expect("mesh starts");
            let receiver = Receiver::serve(&mesh, 1 << 30).expect("bulk receiver");
            ready_tx.send((mesh, receiver)).expect("test waits");
            let _ = stopped.await;
        });
    });
    let (mesh, receiver) = ready_rx.recv().expect("peer started");
    NsPeer {
        mesh,
        receiver,
        _stop: stop,
    }
}
