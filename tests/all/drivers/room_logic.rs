//! Tests of the room_logic driver: a system (room) with a PJLink projector, driven by the
//! `pjlink` driver against the pjlink-advance emulator, and the room logic on top.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::json;
use warden::runtime::{ExecError, ExecOptions, ModuleConfig};
use warden_tests::{Simulator, guests};

use crate::support;

fn projector_emulator() -> Simulator {
    let port = warden_tests::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new(warden_tests::python());
    command.args([
        "-m",
        "pjlink_advance.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--pj-class",
        "1",
        // Power changes take effect at once (the emulator's default is a 10 s warm-up).
        "--transition-delay",
        "0",
    ]);
    Simulator::start_tcp(command, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_turns_on_and_off_through_its_projector_and_mirrors_it() {
    let emulator = projector_emulator();
    let runtime = support::runtime();
    let pjlink = support::load(&runtime, guests::PJLINK);
    let room = support::load(&runtime, guests::ROOM_LOGIC);
    runtime.set_system("boardroom", vec!["projector".into(), "room".into()]);

    let mut config = ModuleConfig::new("projector", pjlink);
    config.endpoint = Some(emulator.addr.to_string().parse().unwrap());
    config.system = Some("boardroom".into());
    let projector = support::start(&runtime, config).await;
    support::wait_status(&projector, "connected", &json!(true)).await;

    let mut config = ModuleConfig::new("room", room);
    config.system = Some("boardroom".into());
    let room = support::start(&runtime, config).await;
    assert_eq!(
        room.status("connected"),
        Some(json!(true)),
        "a logic module is online while it runs"
    );
    support::wait_status(&room, "projector_online", &json!(true)).await;
    let modules = room
        .exec("modules", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(modules, json!(["Projector_1", "Room_1"]));

    for state in [true, false, true] {
        let done = room
            .exec("power", json!([state]), ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(done, json!(state));
        // The projector published its power; the room mirrors it through its subscription.
        support::wait_status(&projector, "power", &json!(state)).await;
        support::wait_status(&room, "power", &json!(state)).await;
        let read = room
            .exec("power_state", json!([]), ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(read, json!(state));
    }

    // The projector going away is mirrored too.
    runtime.stop_module("projector").await;
    support::wait_status(&room, "projector_online", &json!(false)).await;
    let failed = room
        .exec("power", json!([false]), ExecOptions::default())
        .await;
    assert!(matches!(failed, Err(ExecError::Driver(_))), "{failed:?}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_outside_the_projectors_system_reaches_nothing() {
    let runtime = support::runtime();
    let room = support::load(&runtime, guests::ROOM_LOGIC);
    runtime.set_system("empty-room", vec!["lonely-room".into()]);
    let mut config = ModuleConfig::new("lonely-room", room);
    config.system = Some("empty-room".into());
    let room = support::start(&runtime, config).await;
    // init could not subscribe (no projector here) and said so; the module still runs.
    let failed = room
        .exec("power", json!([true]), ExecOptions::default())
        .await;
    match failed {
        Err(ExecError::Driver(e)) => assert!(e.message.contains("Projector_1"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    runtime.shutdown().await;
}
