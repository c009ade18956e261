#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: corpus/frame_decoder/, corpus/endpoint/,
corpus/session/ and corpus/shm_ring/.

A frame_decoder input is one mode byte (see frame_decoder_fuzz.cc) and then the byte stream; a
session input is one mode byte (see session_fuzz.cc) and then what a client sends the server.
Hand-encoded here (no protobuf module needed); the request and response are PROTOCOL.md's worked
example. A shm_ring input is a ring setup and then operations (see shm_ring_fuzz.cc). Re-run after changing the wire format: python3 tests/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x31435052
HELLO, REQUEST, RESPONSE, CANCEL, PING, PONG, GOAWAY, MESSAGE, WINDOW = range(1, 10)
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

# Session mode byte: bits 0-2 read chunk size, bits 3-4 write behaviour, bit 5 the client holds
# the connection open after its bytes, bit 6 message boundaries, bit 7 server shutdown half way.
READ_1, READ_3, READ_7, READ_16, READ_61, READ_256, READ_4096, READ_ALL = range(8)
TAKE_ALL, TAKE_NOTHING, TAKE_SOME, PEER_GONE = 0x00, 0x08, 0x10, 0x18
HOLD, MESSAGES, SHUTDOWN = 0x20, 0x40, 0x80

ECHO, TYPED_HELLO, SLEEP, FAIL, THROW, BIG, STREAM, FLOOD = (
    b'/fuzz.Fuzz/' + m
    for m in (b'Echo', b'Hello', b'Sleep', b'Fail', b'Throw', b'Big', b'Stream', b'Flood'))


def client_hello(version=1, max_frame_payload=0, agent=b'fuzz-client', stream_window=0):
    body = uint_field(1, version) if version else b''
    if max_frame_payload:
        body += uint_field(2, max_frame_payload)
    body += bytes_field(3, agent)
    if stream_window:
        body += uint_field(5, stream_window)
    return frame(HELLO, 0, 0, body)


def open_stream(call_id, method, timeout_us=1000000, message=b''):
    head = bytes_field(1, method)
    if timeout_us:
        head += uint_field(2, timeout_us)
    return frame(REQUEST, 0, call_id, delimited(head, message))


def message(call_id, data):
    return frame(MESSAGE, 0, call_id, data)


def half_close(call_id, payload=b''):
    return frame(MESSAGE, EOS, call_id, payload)


def window(call_id, grant, size=4):
    return frame(WINDOW, 0, call_id, grant.to_bytes(8, 'little')[:size])


def call(call_id, method, message=b'', timeout_us=1000000, metadata=()):
    head = bytes_field(1, method)
    if timeout_us:
        head += uint_field(2, timeout_us)
    for key, value in metadata:
        head += bytes_field(3, bytes_field(1, key) + bytes_field(2, value))
    return frame(REQUEST, EOS, call_id, delimited(head, message))


def sleep(call_id, steps, timeout_us=1000000):
    return call(call_id, SLEEP, bytes([steps]), timeout_us)


HI = client_hello()
HS = client_hello(stream_window=65536)
typed_hello_message = uint_field(1, 3) + bytes_field(3, b'typed')
ping8 = frame(PING, 0, 0, b'12345678')

SESSION_SEEDS = {
    'hello_only': bytes([HOLD | READ_ALL]) + HI,
    'echo': bytes([READ_7]) + HI + call(1, ECHO, b'hello'),
    'echo_hold_open': bytes([HOLD | READ_16]) + HI + call(1, ECHO, b'hello'),
    'echo_metadata': bytes([HOLD | READ_61]) + HI +
                     call(2, ECHO, b'md', metadata=[(b'trace-id', b'abc'), (b'x', b'\x00\xff')]),
    'echo_bad_metadata_key': bytes([HOLD | READ_ALL]) + HI +
                             call(2, ECHO, b'md', metadata=[(b'Upper', b'v'), (b'', b'empty')]),
    'echo_no_deadline': bytes([HOLD | READ_3]) + HI + call(9, ECHO, b'x', timeout_us=0),
    'typed_hello': bytes([HOLD | READ_ALL]) + HI + call(3, TYPED_HELLO, typed_hello_message),
    'typed_does_not_parse': bytes([HOLD | READ_ALL]) + HI + call(3, TYPED_HELLO, b'\xff\xff\xff'),
    'sleep_then_cancel': bytes([HOLD | READ_16]) + HI + sleep(3, 7) + frame(CANCEL, 0, 3),
    'sleep_past_deadline': bytes([HOLD | READ_ALL]) + HI + sleep(4, 7, timeout_us=100),
    'sleep_then_end_of_stream': bytes([READ_ALL]) + HI + sleep(5, 7),
    'sleep_many': bytes([HOLD | READ_61]) + HI +
                  b''.join(sleep(i, i % 8, timeout_us=300 * i) for i in range(1, 12)) +
                  b''.join(frame(CANCEL, 0, i) for i in range(1, 12, 3)),
    'cancel_unknown_id': bytes([HOLD | READ_ALL]) + HI + frame(CANCEL, 0, 42) +
                         call(1, ECHO, b'x'),
    'cancel_call_id_zero': bytes([HOLD | READ_ALL]) + HI + frame(CANCEL, 0, 0),
    'pings': bytes([HOLD | READ_7]) + HI + ping8 + frame(PONG, 0, 0, b'12345678') +
             frame(PING, 0, 0) + frame(PING, 0, 0, b'p' * 64) + call(1, ECHO, b'x'),
    'ping_oversized': bytes([HOLD | READ_ALL]) + HI + frame(PING, 0, 0, b'p' * 65),
    'ping_with_call_id': bytes([HOLD | READ_ALL]) + HI + frame(PING, 0, 5, b'id'),
    'pong_with_call_id': bytes([HOLD | READ_ALL]) + HI + frame(PONG, 0, 5, b'id'),
    'ping_flood': bytes([HOLD | READ_4096]) + HI + ping8 * 150,
    'client_goaway': bytes([HOLD | READ_ALL]) + HI +
                     frame(GOAWAY, 0, 0, uint_field(1, 0) + bytes_field(2, b'bye')) +
                     call(6, ECHO, b'after goaway'),
    'client_sends_response': bytes([HOLD | READ_ALL]) + HI + response + error_response,
    'unknown_frame_type': bytes([HOLD | READ_16]) + HI + frame(200, 0, 5, b'future') +
                          call(7, ECHO, b'still here'),
    'truncated_request': bytes([READ_3]) + HI + call(1, ECHO, b'cut short')[:-4],
    'truncated_header': bytes([READ_1]) + HI + call(1, ECHO, b'x')[:9],
    'call_id_zero': bytes([HOLD | READ_ALL]) + HI + call(0, ECHO, b'zero'),
    'duplicate_call_id': bytes([HOLD | READ_ALL]) + HI + sleep(7, 6) + sleep(7, 6),
    'call_id_reused_later': bytes([HOLD | READ_61]) + HI + call(8, ECHO, b'a') + ping8 * 3 +
                            call(8, ECHO, b'b'),
    'request_before_hello': bytes([READ_ALL]) + call(1, ECHO, b'early'),
    'hello_twice': bytes([HOLD | READ_ALL]) + HI + HI + call(1, ECHO, b'x'),
    'hello_malformed': bytes([READ_ALL]) + frame(HELLO, 0, 0, b'\xff\xff\xff'),
    'hello_version_0': bytes([READ_ALL]) + client_hello(version=0) + call(1, ECHO, b'x'),
    'hello_version_2': bytes([HOLD | READ_ALL]) + client_hello(version=2) + call(1, ECHO, b'x'),
    'hello_tiny_max_frame': bytes([HOLD | READ_ALL]) + client_hello(max_frame_payload=100) +
                            call(1, ECHO, b'x'),
    'big_over_client_limit': bytes([HOLD | READ_ALL]) + client_hello(max_frame_payload=16384) +
                             call(1, BIG, b'\x00\x20') + call(2, BIG, b'\x00\x10'),
    'unknown_method': bytes([HOLD | READ_ALL]) + HI + call(1, b'/fuzz.Fuzz/Nope', b'x') +
                      call(2, b'no slash', b'') + call(3, b'/\xff\xfe/\x00', b''),
    'malformed_request_header': bytes([HOLD | READ_ALL]) + HI +
                                frame(REQUEST, EOS, 3, b'\x7f\x01') + frame(REQUEST, EOS, 4, b'') +
                                call(5, ECHO, b'ok'),
    'fail_codes': bytes([HOLD | READ_61]) + HI +
                  b''.join(call(i, FAIL, bytes([i])) for i in range(1, 17)) +
                  call(17, FAIL, b'\x02L'),
    'handler_throws': bytes([HOLD | READ_ALL]) + HI + call(1, THROW) + call(2, ECHO, b'after'),
    'shutdown_half_way': bytes([SHUTDOWN | HOLD | READ_16]) + HI + sleep(1, 7) +
                         call(2, ECHO, b'a') + call(3, ECHO, b'b') + call(4, ECHO, b'c'),
    'shutdown_at_end_of_stream': bytes([SHUTDOWN | READ_7]) + HI + sleep(1, 7) +
                                 call(2, ECHO, b'a'),
    'partial_writes': bytes([TAKE_SOME | HOLD | READ_61]) + HI +
                      b''.join(call(i, ECHO, b'w' * i) for i in range(1, 6)) + ping8,
    'async_writes': bytes([TAKE_NOTHING | HOLD | READ_ALL]) + HI + call(1, ECHO, b'a') +
                    call(2, BIG, b'\x00\x04') + ping8,
    'peer_gone': bytes([PEER_GONE | HOLD | READ_ALL]) + HI + call(1, ECHO, b'a') + sleep(2, 3),
    'message_boundaries': bytes([MESSAGES | HOLD | READ_ALL]) + HI + call(1, ECHO, b'a') +
                          call(2, TYPED_HELLO, typed_hello_message) + ping8,
    'garbage': bytes([READ_1]) + b'GET / HTTP/1.1\r\n\r\n',
    'over_frame_limit': bytes([READ_ALL]) + HI + header(REQUEST, EOS, 1, 0xFFFFFFFF),
    'reserved_bits': bytes([READ_ALL]) + HI + header(PING, 0x02, 0, 0),
    'type_zero': bytes([READ_ALL]) + HI + header(0, 0, 1, 0),
    # Streaming calls (PROTOCOL.md §13).
    'stream_echo': bytes([HOLD | READ_16]) + HS + open_stream(1, STREAM) + message(1, b'a') +
                   message(1, b'') + message(1, b'ccc') + half_close(1),
    'stream_echo_partial_writes': bytes([TAKE_SOME | HOLD | READ_61]) + HS +
                                  open_stream(1, STREAM) + message(1, b'x' * 40) + half_close(1),
    'stream_flood_small_window': bytes([HOLD | READ_ALL]) + client_hello(stream_window=64) +
                                 open_stream(3, FLOOD) + message(3, b'\x3f\x10') +
                                 half_close(3) + window(3, 100) + window(3, 1000),
    'stream_flood_async_writes': bytes([TAKE_NOTHING | HOLD | READ_ALL]) + HS +
                                 open_stream(3, FLOOD) + message(3, b'\x10\x40') + half_close(3),
    'stream_flood_then_end': bytes([READ_7]) + HS + open_stream(3, FLOOD) +
                             message(3, b'\x3f\xff') + half_close(3),
    'stream_without_negotiation': bytes([HOLD | READ_ALL]) + HI + open_stream(1, STREAM),
    'stream_cancel': bytes([HOLD | READ_16]) + HS + open_stream(2, STREAM) + message(2, b'a') +
                     frame(CANCEL, 0, 2) + message(2, b'after cancel') + call(3, ECHO, b'x'),
    'stream_deadline': bytes([HOLD | READ_ALL]) + HS + open_stream(2, STREAM, timeout_us=100) +
                       message(2, b'late'),
    'stream_to_unary_method': bytes([HOLD | READ_ALL]) + HS + open_stream(1, ECHO) +
                              call(2, STREAM, b'unary call to a stream'),
    'stream_open_with_message_bytes': bytes([HOLD | READ_ALL]) + HS +
                                      open_stream(1, STREAM, message=b'extra'),
    'stream_unknown_method': bytes([HOLD | READ_ALL]) + HS + open_stream(1, b'/fuzz.Fuzz/Nope'),
    'stream_eos_with_payload': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) +
                               half_close(1, b'x'),
    'stream_message_after_eos': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) +
                                half_close(1) + message(1, b'late'),
    'stream_two_eos': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) + half_close(1) +
                      half_close(1),
    'stream_message_to_unary_call': bytes([HOLD | READ_ALL]) + HS + sleep(4, 7) +
                                    message(4, b'not a stream'),
    'stream_frames_unknown_id': bytes([HOLD | READ_ALL]) + HS + message(9, b'x') +
                                window(9, 5) + half_close(9) + call(1, ECHO, b'still here'),
    'stream_frames_call_id_zero': bytes([HOLD | READ_ALL]) + HS + message(0, b'x'),
    'window_bad_size': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) +
                       window(1, 7, size=3),
    'window_zero': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) + window(1, 0),
    'window_overflow': bytes([HOLD | READ_ALL]) + HS + open_stream(1, STREAM) +
                       window(1, 0x7fffffff) + window(1, 0x7fffffff),
    'stream_many': bytes([HOLD | READ_61]) + HS +
                   b''.join(open_stream(i, STREAM) + message(i, bytes([i])) for i in range(1, 9)) +
                   b''.join(half_close(i) for i in range(1, 9, 2)) +
                   b''.join(frame(CANCEL, 0, i) for i in range(2, 9, 2)),
    # ServerOptions::authorize (session_fuzz.cc refuses metadata "x-deny"), and the refusal
    # fields of a hello (PROTOCOL.md §6.1a), which a client never sends.
    'authorize_refuses': bytes([HOLD | READ_16]) + HI +
                         call(1, ECHO, b'no', metadata=[(b'x-deny', b'1')]) +
                         call(2, b'/fuzz.Fuzz/Nope', b'', metadata=[(b'x-deny', b'')]) +
                         call(3, ECHO, b'yes', metadata=[(b'x-allow', b'1')]),
    'hello_refusal_first': bytes([HOLD | READ_ALL]) +
                           frame(HELLO, 0, 0, uint_field(1, 1) + uint_field(6, 7) +
                                 bytes_field(7, b'you may not')) + call(1, ECHO, b'x'),
    'stream_shutdown_half_way': bytes([SHUTDOWN | HOLD | READ_16]) + HS +
                                open_stream(1, STREAM) + message(1, b'a') + message(1, b'b') +
                                half_close(1),
}

ENDPOINT_SEEDS = [
    'tcp://127.0.0.1:7000', 'tcp://[::1]:0', 'tcp://host.example:7000', 'TCP://Host:80',
    'unix:///run/svc.sock', 'unix:@svc', 'unix:relative/svc.sock', 'unix://relative',
    'udp://127.0.0.1:7001', 'udp://[fe80::1%eth0]:53', 'pipe://stdio', 'fifo:///run/svc',
    'shm://svc', 'tcp://::1:7000', 'tcp://h:99999', 'http://x:1', 'unix:@', '',
]

# shm_ring: capacity byte (4 KiB << n), setup byte (bit 0: hostile control block), fill, ops.
RING_4K, RING_64K = 0, 4
PAD, DATA = 2, 1


def ring(capacity=RING_4K, setup=0, fill=b''):
    return bytes([capacity, setup, len(fill)]) + fill


def r_write(size, split=0, fill=b''):
    return bytes([0]) + struct.pack('<HBB', size, split, len(fill)) + fill


def r_read(size):
    return bytes([1]) + struct.pack('<H', size)


def r_read_small(size):
    return bytes([2, size])


def r_poke_tail(value, relative=False):
    return (bytes([3, 1]) + struct.pack('<i', value) if relative
            else bytes([3, 0]) + struct.pack('<Q', value))


def r_poke_head(value, relative=False):
    return (bytes([4, 1]) + struct.pack('<i', value) if relative
            else bytes([4, 0]) + struct.pack('<Q', value))


def r_poke_flag(producer, value):
    return bytes([5, 1 if producer else 0]) + struct.pack('<I', value)


def r_poke_bytes(offset, data):
    return bytes([6]) + struct.pack('<HB', offset, len(data)) + data


def r_poke_header(offset, length, kind):
    return bytes([7]) + struct.pack('<HIB', offset, length, kind)


(R_SLEEP, R_WAKE, W_SLEEP, W_WAKE, HAS_DATA, HAS_SPACE, TAKE_CONSUMER,
 TAKE_PRODUCER) = (bytes([i]) for i in range(8, 16))
# Both counters at 4 KiB - 64 (64 bytes before the end of a 4 KiB ring).
NEAR_END = r_write(2040) + r_read(2040) + r_write(1976) + r_read(1976)

RING_SEEDS = {
    'round_trip': ring() + r_write(10) + r_read(10) + r_write(100, 0x5A) + r_read_small(50) +
                  r_read(100) + HAS_DATA + HAS_SPACE,
    'wrap_around': ring(fill=b'\xee' * 8) + b''.join(
        r_write(1000 + 37 * i, i * 17 & 0xFF, bytes([i, i + 1, i + 2])) + r_read(900 + 13 * i)
        for i in range(30)) + r_read(4096),
    'fragments_64k': ring(RING_64K) + r_write(65535, 0x37) + r_read(30000) + r_write(65535) +
                     r_read(65535) + r_read(65535) + HAS_SPACE,
    'partial_reads': ring() + r_write(100) + r_read_small(1) * 10 + r_write(30) + r_read(100),
    'pad_at_end': ring() + r_write(2040) + r_read(2040) + r_write(2032) + r_read(2032) +
                  r_write(10) + r_read(10),
    'full_ring': ring() + r_write(5000) + HAS_SPACE + r_write(10) + r_read_small(10) +
                 HAS_SPACE + r_read(2100) + HAS_SPACE + r_write(3000),
    'sleep': ring() + R_SLEEP + r_write(5) + TAKE_CONSUMER + TAKE_CONSUMER + r_read(5) +
             R_SLEEP + R_WAKE + r_write(9000) + W_SLEEP + r_read(3000) + TAKE_PRODUCER +
             W_WAKE + W_SLEEP + TAKE_PRODUCER,
    'hostile_start': ring(setup=1, fill=bytes(range(7, 39))) + r_read(100) + r_write(10) +
                     R_SLEEP + W_SLEEP,
    'tail_behind_head': ring() + r_write(100) + r_read(100) + r_poke_tail(-8, True) +
                        r_read(100) + r_read(1),
    'tail_far_ahead': ring() + r_write(8) + r_poke_tail(1 << 40) + HAS_DATA + r_read(100),
    'unknown_kind': ring() + r_write(5) + r_poke_header(0, 5, 3) + r_read(5),
    'empty_record': ring() + r_write(5) + r_poke_header(0, 0, DATA) + r_read(5),
    'length_past_tail': ring() + r_write(5) + r_poke_header(0, 0xFFFFFFF9, DATA) + r_read(5),
    'record_crosses_end': ring() + NEAR_END + r_write(5) + r_poke_tail(256, True) +
                          r_poke_header(4032, 100, DATA) + r_read(300),
    'bad_pad': ring() + NEAR_END + r_write(100) + r_poke_header(4032, 48, PAD) + r_read(300),
    'pad_past_tail': ring() + NEAR_END + r_write(100) + r_poke_header(4032, 56, PAD) +
                     r_poke_tail(4064) + r_read(300),
    'head_backwards': ring() + r_write(100) + r_read(100) + r_write(5) +
                      r_poke_head(-8, True) + r_write(5) + HAS_SPACE + r_write(5),
    'head_past_tail': ring() + r_write(5) + r_poke_head(1000) + W_SLEEP + r_write(5),
    'flag_pokes': ring() + r_poke_flag(False, 0xDEADBEEF) + r_write(5) + TAKE_CONSUMER +
                  r_poke_flag(True, 7) + r_read(5) + TAKE_PRODUCER,
    'payload_poked_mid_record': ring() + r_write(200) + r_read_small(20) +
                                r_poke_bytes(8, b'\x01\x02' * 8) + r_read(300) + r_write(50) +
                                r_read(50),
}


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), 'wb') as f:
        f.write(data)


# udp_datagram: datagrams, each u16 length + bytes. Header (48 bytes, little-endian): magic "CUD1",
# type, flags, u16 reserved, u64 session, u64 incarnation, u32 seq, u32 ack, u32 window,
# u32 reserved, u64 aux; DATA carries a payload.
def udp_header(kind, seq=0, ack=0, window=65536, aux=0, session=0x1122334455667788,
               incarnation=0x99aabbccddeeff00):
    return struct.pack('<IBBHQQIIIIQ', 0x31445543, kind, 0, 0, session, incarnation, seq, ack,
                       window, 0, aux)


def udp_datagrams(*datagrams):
    return b''.join(struct.pack('<H', len(d)) + d for d in datagrams)


UDP_SEEDS = {
    'hello': udp_datagrams(udp_header(1)),
    'data_in_order': udp_datagrams(udp_header(5, seq=1) + b'hello', udp_header(5, seq=2) + b'world',
                                   udp_header(8, seq=3)),
    'data_reordered_dup': udp_datagrams(udp_header(5, seq=2) + b'b' * 100,
                                        udp_header(5, seq=1) + b'a' * 100,
                                        udp_header(5, seq=1) + b'a' * 100,
                                        udp_header(5, seq=4) + b'd'),
    'beyond_window': udp_datagrams(udp_header(5, seq=5000) + b'x', udp_header(5, seq=0xffffffff) + b'y'),
    'ack_with_sack': udp_datagrams(udp_header(6, ack=3, aux=0b1011)),
    'bad_magic': udp_datagrams(b'XUD1' + udp_header(5, seq=1)[4:] + b'z'),
    'short': udp_datagrams(udp_header(5, seq=1)[:20]),
}


def main():
    for name, data in FRAME_SEEDS.items():
        write(os.path.join(HERE, 'corpus', 'frame_decoder'), name, data)
    for i, uri in enumerate(ENDPOINT_SEEDS):
        write(os.path.join(HERE, 'corpus', 'endpoint'), 'seed_%02d' % i, uri.encode())
    for name, data in SESSION_SEEDS.items():
        write(os.path.join(HERE, 'corpus', 'session'), name, data)
    for name, data in RING_SEEDS.items():
        write(os.path.join(HERE, 'corpus', 'shm_ring'), name, data)
    for name, data in UDP_SEEDS.items():
        write(os.path.join(HERE, 'corpus', 'udp_datagram'), name, data)


if __name__ == '__main__':
    main()
