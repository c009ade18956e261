#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: corpus/frame_decoder/ and corpus/endpoint/.

A frame_decoder input is one mode byte (see frame_decoder_fuzz.cc) and then the byte stream.
Hand-encoded here (no protobuf module needed); the request and response are PROTOCOL.md's worked
example. Re-run after changing the wire format: python3 tests/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x31435052
HELLO, REQUEST, RESPONSE, CANCEL, PING, PONG, GOAWAY = range(1, 8)
EOS = 0x01

# Mode byte: bits 0-5 chunk size index (index + 1 bytes below 40), bit 6 zero-copy payloads,
# bit 7 the default 64 MiB + 64 KiB limit instead of 4096.
CHUNK_1, CHUNK_5, CHUNK_16, CHUNK_40 = 0x00, 0x04, 0x0F, 0x27
HUGE_WINDOW, ZERO_COPY, DEFAULT_LIMIT = 0x3F, 0x40, 0x80


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def uint_field(number, value):
    return varint(number << 3 | 0) + varint(value)


def bytes_field(number, value):
    return varint(number << 3 | 2) + varint(len(value)) + value


def header(type_, flags, call_id, length, reserved=0, magic=MAGIC):
    return struct.pack('<IBBHII', magic, type_, flags, reserved, call_id, length)


def frame(type_, flags, call_id, payload=b''):
    return header(type_, flags, call_id, len(payload)) + payload


def delimited(header_bytes, message):
    return varint(len(header_bytes)) + header_bytes + message


hello = frame(HELLO, 0, 0, uint_field(1, 1) + uint_field(2, 67174400) +
              bytes_field(3, b'courier/0.1'))
echo_request = bytes_field(1, b'hi')
request = frame(REQUEST, EOS, 1, delimited(
    bytes_field(1, b'/courier.examples.Echo/Say') + uint_field(2, 1000000), echo_request))
response = frame(RESPONSE, EOS, 1, delimited(b'', bytes_field(1, b'hi')))
error_response = frame(RESPONSE, EOS, 2, delimited(
    uint_field(1, 12) + bytes_field(2, b'unknown method'), b''))
cancel = frame(CANCEL, 0, 1)
goaway = frame(GOAWAY, 0, 0, uint_field(1, 7) + bytes_field(2, b'shutdown'))

FRAME_SEEDS = {
    'hello': bytes([CHUNK_40]) + hello,
    'request': bytes([CHUNK_1]) + request,
    'response_zero_copy': bytes([ZERO_COPY | CHUNK_16]) + response,
    'error_response': bytes([CHUNK_5]) + error_response,
    'cancel': bytes([CHUNK_16]) + cancel,
    'ping_pong': bytes([CHUNK_40]) + frame(PING, 0, 0, b'12345678') +
                 frame(PONG, 0, 0, b'12345678'),
    'goaway': bytes([CHUNK_5]) + goaway,
    'unknown_type': bytes([CHUNK_16]) + frame(200, 0, 5, b'future') + frame(PING, 0, 0),
    'call_back_to_back': bytes([CHUNK_5]) + hello + request + response + cancel,
    'at_limit_zero_copy': bytes([ZERO_COPY | CHUNK_40]) + frame(RESPONSE, EOS, 3,
                                                               bytes(range(256)) * 16),
    'over_limit': bytes([CHUNK_16]) + header(RESPONSE, EOS, 3, 4097),
    'bad_magic': bytes([CHUNK_1]) + b'GET / HTTP/1.1\r\n\r\n',
    'type_zero': bytes([CHUNK_40]) + header(0, 0, 1, 0),
    'reserved_bits': bytes([CHUNK_40]) + header(PING, 0x02, 0, 0) + header(PING, 0, 0, 0, 1),
    'huge_length': bytes([DEFAULT_LIMIT | CHUNK_40]) + header(REQUEST, EOS, 1, 0xFFFFFFFF),
    'large_declared_length': bytes([DEFAULT_LIMIT | CHUNK_40]) +
                             header(REQUEST, EOS, 1, 60 << 20) + bytes(100),
}

ENDPOINT_SEEDS = [
    'tcp://127.0.0.1:7000', 'tcp://[::1]:0', 'tcp://host.example:7000', 'TCP://Host:80',
    'unix:///run/svc.sock', 'unix:@svc', 'unix:relative/svc.sock', 'unix://relative',
    'udp://127.0.0.1:7001', 'udp://[fe80::1%eth0]:53', 'pipe://stdio', 'fifo:///run/svc',
    'shm://svc', 'tcp://::1:7000', 'tcp://h:99999', 'http://x:1', 'unix:@', '',
]


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), 'wb') as f:
        f.write(data)


def main():
    for name, data in FRAME_SEEDS.items():
        write(os.path.join(HERE, 'corpus', 'frame_decoder'), name, data)
    for i, uri in enumerate(ENDPOINT_SEEDS):
        write(os.path.join(HERE, 'corpus', 'endpoint'), 'seed_%02d' % i, uri.encode())


if __name__ == '__main__':
    main()
