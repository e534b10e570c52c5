//! One module per driver in drivers/, each testing it against a real peer.

mod bacnet_ip;
mod http_json;
mod modbus_tcp;
mod mqtt;
mod pjlink;
mod room_logic;
mod shelly_gen2;

/// Every driver in drivers/ must have a test module here, or this fails to compile.
macro_rules! assert_driver_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
warden_tests::foreach_driver!(assert_driver_tested);
