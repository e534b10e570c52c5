//! Tests of the room_logic driver.
