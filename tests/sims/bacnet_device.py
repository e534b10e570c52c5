"""A BACnet/IP device for the bacnet_ip driver's tests, served by bacpypes3's own stack.

    python tests/sims/bacnet_device.py --port PORT [--debug]

The protocol is bacpypes3's (0.0.110): this script only builds its objects and starts an
`Application` whose one network port is `127.0.0.1/32:PORT` (never another interface).
With a /32 prefix the broadcast address is the device's own, so bacpypes3 opens no
broadcast socket: the device is reachable by unicast only, and answers a unicast Who-Is
with a unicast I-Am to the asker. State lives as long as the process, so a value written
by one client is read back by the next. Every reply, Error, Reject and Abort is produced
by bacpypes3.

The device and its objects (the tests assert these initial values; change both together):

  device,599             object-name "warden-test-device", vendor-identifier 999,
                         max-apdu-length-accepted 1024, segmentation-supported
                         segmented-both (bacpypes3's defaults)
  analog-value,1         "zone-setpoint": present-value 21.5, units degrees-celsius,
                         description "Zone temperature setpoint"; commandable (priority
                         array, relinquish-default 21.5)
  analog-input,1         "zone-temperature": present-value 22.25, units degrees-celsius,
                         description "Zone air temperature", out-of-service false; its
                         present-value is read-only while out-of-service is false
                         (write-access-denied)
  binary-value,1         "fan-enable": present-value active, description "Supply fan
                         enable"; writable, not commandable
  multi-state-value,1    "occupancy-mode": present-value 2, number-of-states 3,
                         state-text ["occupied", "unoccupied", "standby"]

No other object exists: any other object identifier answers object / unknown-object.

The script prints `ready PORT` on stdout once the application is built; the UDP socket is
bound a moment later, so the tests also wait for an answer to a Who-Is.
"""

from __future__ import annotations

import argparse
import asyncio

from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.local.oos import OutOfService

#: Only ever listen on loopback: this is a test peer, not a device on the network.
LISTEN_HOST = "127.0.0.1"

DEVICE_INSTANCE = 599
DEVICE_NAME = "warden-test-device"
#: bacpypes3's sample vendor identifier, which its local objects are registered under.
VENDOR_IDENTIFIER = 999


class ReadOnlyAnalogInput(OutOfService, AnalogInputObject):
    """bacpypes3's analog input with its out-of-service rule for present-value."""


def objects(port: int) -> list:
    """The device object, its network port, and the four points."""
    device = DeviceObject(
        objectIdentifier=("device", DEVICE_INSTANCE),
        objectName=DEVICE_NAME,
        vendorIdentifier=VENDOR_IDENTIFIER,
    )
    network_port = NetworkPortObject(
        f"{LISTEN_HOST}/32:{port}",
        objectIdentifier=("network-port", 1),
        objectName="NetworkPort-1",
        networkNumber=0,
        networkNumberQuality="unknown",
    )
    setpoint = AnalogValueObjectCmd(
        objectIdentifier=("analog-value", 1),
        objectName="zone-setpoint",
        presentValue=21.5,
        statusFlags=[0, 0, 0, 0],
        eventState="normal",
        outOfService=False,
        units="degreesCelsius",
        description="Zone temperature setpoint",
    )
    temperature = ReadOnlyAnalogInput(
        objectIdentifier=("analog-input", 1),
        objectName="zone-temperature",
        presentValue=22.25,
        statusFlags=[0, 0, 0, 0],
        eventState="normal",
        outOfService=False,
        units="degreesCelsius",
        description="Zone air temperature",
    )
    fan = BinaryValueObject(
        objectIdentifier=("binary-value", 1),
        objectName="fan-enable",
        presentValue="active",
        statusFlags=[0, 0, 0, 0],
        eventState="normal",
        outOfService=False,
        description="Supply fan enable",
    )
    occupancy = MultiStateValueObject(
        objectIdentifier=("multi-state-value", 1),
        objectName="occupancy-mode",
        presentValue=2,
        statusFlags=[0, 0, 0, 0],
        eventState="normal",
        outOfService=False,
        numberOfStates=3,
        stateText=["occupied", "unoccupied", "standby"],
    )
    return [device, network_port, setpoint, temperature, fan, occupancy]


async def serve(port: int) -> None:
    Application.from_object_list(objects(port))
    print(f"ready {port}", flush=True)
    await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="UDP port on 127.0.0.1")
    parser.add_argument("--debug", action="store_true", help="log bacpypes3's debugging")
    args = parser.parse_args()
    if args.debug:
        from bacpypes3.debugging import ModuleLogger  # noqa: F401  (enables the loggers)
        import logging

        logging.basicConfig(level=logging.DEBUG)
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
