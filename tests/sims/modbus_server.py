"""A Modbus TCP device for the modbus_tcp driver's tests, served by pymodbus's own server.

    python tests/sims/modbus_server.py --port PORT

The protocol is pymodbus's (3.16): this script only fills its datastore and starts
`StartAsyncTcpServer` on 127.0.0.1 (never another interface). State lives as long as the
process, so a write made by one client is read back by the next.

The device answers unit id 1 only; pymodbus answers any other unit id with exception 4,
SERVER DEVICE FAILURE. Addresses are the 0-based addresses on the wire.

Initial values (the tests assert these; change both together):

  coils              0..15   1 0 1 1 0 0 0 0  1 0 0 0 0 0 0 1   (COILS)
  discrete inputs    0..15   0 1 0 1 0 1 0 1  1 1 1 1 0 0 0 0   (DISCRETE_INPUTS)
  holding registers  0..9    215 450 1000 0 65535 1 2 3 4 5     (HOLDING_REGISTERS)
                     100..103  1111 2222 3333 4444               (HOLDING_REGISTERS_HIGH)
  input registers    0..7    100 200 300 400 500 600 700 800     (INPUT_REGISTERS)

Every other address is invalid and answers exception 2, ILLEGAL DATA ADDRESS: coils and
discrete inputs from 16, holding registers 10..99 and from 104, input registers from 8.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from pymodbus.server import StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

#: Only ever listen on loopback: this is a test peer, not a device on the network.
LISTEN_HOST = "127.0.0.1"

UNIT_ID = 1

COILS = [True, False, True, True, False, False, False, False,
         True, False, False, False, False, False, False, True]
DISCRETE_INPUTS = [False, True, False, True, False, True, False, True,
                   True, True, True, True, False, False, False, False]
HOLDING_REGISTERS = [215, 450, 1000, 0, 65535, 1, 2, 3, 4, 5]
HOLDING_REGISTERS_HIGH_ADDRESS = 100
HOLDING_REGISTERS_HIGH = [1111, 2222, 3333, 4444]
INPUT_REGISTERS = [100, 200, 300, 400, 500, 600, 700, 800]


def device() -> SimDevice:
    """The simulated device: four separate blocks, as most PLCs have them.

    With separate blocks pymodbus addresses coils and discrete inputs bit by bit, and
    marks every address outside the listed ranges invalid. Bit blocks are whole 16-bit
    words, which is why there are exactly 16 coils and 16 discrete inputs.
    """
    coils = [SimData(0, values=list(COILS), datatype=DataType.BITS)]
    discrete_inputs = [SimData(0, values=list(DISCRETE_INPUTS), datatype=DataType.BITS)]
    holding_registers = [
        SimData(0, values=list(HOLDING_REGISTERS), datatype=DataType.REGISTERS),
        SimData(
            HOLDING_REGISTERS_HIGH_ADDRESS,
            values=list(HOLDING_REGISTERS_HIGH),
            datatype=DataType.REGISTERS,
        ),
    ]
    input_registers = [
        SimData(0, values=list(INPUT_REGISTERS), datatype=DataType.REGISTERS, readonly=True)
    ]
    return SimDevice(
        UNIT_ID,
        simdata=(coils, discrete_inputs, holding_registers, input_registers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    asyncio.run(StartAsyncTcpServer(device(), address=(LISTEN_HOST, args.port)))


if __name__ == "__main__":
    main()
