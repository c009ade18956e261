// The udp:// wire header and ARQ state machines, without sockets: every malformed header, and
// loss, duplication, reordering, window, SACK, FIN ordering and stale seqs.
#include "transport/udp/arq.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "transport/udp/udp_wire.h"

namespace courier::transport::udp {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<std::byte> Encode(const Header& h, size_t payload = 0) {
  std::vector<std::byte> out(kHeaderSize + payload, std::byte{'p'});
  EncodeHeader(h, std::span<std::byte, kHeaderSize>(out.data(), kHeaderSize));
  return out;
}

TEST(UdpWireTest, RoundTripsEveryField) {
  Header h{.type = Type::kData,
           .session = 0x0102030405060708,
           .incarnation = 0x1112131415161718,
           .seq = 7,
           .ack = 9,
           .window = 1 << 20,
           .aux = 0x8000000000000001};
  std::vector<std::byte> bytes = Encode(h, 5);
  EXPECT_EQ(std::to_integer<char>(bytes[0]), 'C');
  EXPECT_EQ(std::to_integer<char>(bytes[3]), '1');
  absl::StatusOr<Datagram> d = DecodeDatagram(bytes);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->header, h);
  EXPECT_EQ(d->payload.size(), 5u);
}

TEST(UdpWireTest, MalformedDatagramsAreDataLoss) {
  Header data{.type = Type::kData, .seq = 1};
  std::vector<std::byte> good = Encode(data, 1);
  EXPECT_THAT(DecodeDatagram(std::span(good).first(kHeaderSize - 1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("shorter")));
  EXPECT_THAT(DecodeDatagram({}), StatusIs(absl::StatusCode::kDataLoss));
  auto corrupt = [&](size_t at, uint8_t value) {
    std::vector<std::byte> b = good;
    b[at] = std::byte{value};
    return DecodeDatagram(b);
  };
  EXPECT_THAT(corrupt(0, 'X'), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  EXPECT_THAT(corrupt(4, 0), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("type")));
  EXPECT_THAT(corrupt(4, 10), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("type")));
  EXPECT_THAT(corrupt(5, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
  EXPECT_THAT(corrupt(6, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
  EXPECT_THAT(corrupt(37, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
  EXPECT_THAT(DecodeDatagram(Encode(data)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("without payload")));
  EXPECT_THAT(DecodeDatagram(Encode(Header{.type = Type::kAck}, 1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("payload")));
  EXPECT_THAT(DecodeDatagram(Encode(Header{.type = Type::kFin})),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("seq 0")));
  EXPECT_THAT(DecodeDatagram(Encode(Header{.type = Type::kData}, 1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("seq 0")));
  for (int t = 1; t <= 9; ++t) {
    Header h{.type = static_cast<Type>(t), .seq = 1};
    EXPECT_THAT(DecodeDatagram(Encode(h, t == 5 ? 1 : 0)), IsOk()) << t;
  }
}

TEST(UdpWireTest, RandomBytesNeverCrash) {
  std::mt19937 rng(1);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> b(rng() % 100);
    for (auto& x : b) x = std::byte(rng() & 0xff);
    if (b.size() >= 4 && i % 2 == 0) {
      b[0] = std::byte{'C'};
      b[1] = std::byte{'U'};
      b[2] = std::byte{'D'};
      b[3] = std::byte{'1'};
    }
    (void)DecodeDatagram(b);
  }
}

TEST(UdpWireTest, SipHashMatchesTheReferenceVector) {
  // The SipHash paper's test vector: key 00..0f, message 00..0e.
  uint64_t key[2] = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::vector<std::byte> message(15);
  for (size_t i = 0; i < message.size(); ++i) message[i] = std::byte(i);
  EXPECT_EQ(SipHash24(key, message), 0xa129ca6149be45e5ULL);
}

asio::const_buffer Buf(const std::string& s) { return asio::const_buffer(s.data(), s.size()); }

// Moves datagrams from a sender to a receiver through a lossy, duplicating, reordering link
// until everything is delivered; acks flow back instantly.
struct Link {
  Sender sender;
  Receiver receiver;
  std::mt19937 rng{42};
  double loss = 0, dup = 0, reorder = 0;
  Clock::time_point now = Clock::time_point() + std::chrono::seconds(1);
  std::string delivered;
  bool fin = false;

  void Step() {
    std::vector<Sender::Segment> wire;
    for (const Sender::Segment* s : sender.Collect(now)) {
      std::uniform_real_distribution<double> u(0, 1);
      if (u(rng) < loss) continue;
      wire.push_back(*s);
      if (u(rng) < dup) wire.push_back(*s);
    }
    if (wire.size() > 1 && std::uniform_real_distribution<double>(0, 1)(rng) < reorder) {
      std::shuffle(wire.begin(), wire.end(), rng);
    }
    for (const Sender::Segment& s : wire) {
      receiver.OnData(
          static_cast<uint32_t>(s.seq),
          std::span(reinterpret_cast<const std::byte*>(s.payload.data()), s.payload.size()), s.fin);
    }
    std::string chunk(1 << 16, '\0');
    while (size_t n =
               receiver.Read(std::span(reinterpret_cast<std::byte*>(chunk.data()), chunk.size()))) {
      delivered.append(chunk, 0, n);
    }
    fin = receiver.fin_received();
    now += std::chrono::milliseconds(1);
    sender.OnAck(receiver.ack(), receiver.sack(), receiver.window(), now);
  }
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + i / 251);
  return s;
}

TEST(ArqTest, DeliversInOrderThroughLossDuplicationAndReordering) {
  for (double loss : {0.0, 0.1, 0.3}) {
    Link link{
        Sender(SenderOptions{
            .max_payload = 1000, .buffer_limit = 64 * 1024, .initial_peer_window = 64 * 1024}),
        Receiver(64 * 1024)};
    link.loss = loss;
    link.dup = 0.1;
    link.reorder = 0.3;
    std::string sent;
    for (int i = 0; i < 300; ++i) {
      std::string w = Pattern(1 + (i * 131) % 3000) + std::to_string(i);
      asio::const_buffer b = Buf(w);
      while (!link.sender.CanAccept(w.size())) link.Step();
      link.sender.Push(std::span(&b, 1));
      sent += w;
    }
    link.sender.PushFin();
    for (int i = 0; i < 200000 && !link.sender.fin_acked(); ++i) link.Step();
    EXPECT_TRUE(link.sender.fin_acked()) << loss;
    EXPECT_TRUE(link.fin);
    EXPECT_EQ(link.delivered, sent) << "loss " << loss;
    if (loss > 0) {
      EXPECT_GT(link.sender.retransmits(), 0u);
    }
  }
}

TEST(ArqTest, WriteSplitsAtMaxPayloadAndStartsADatagram) {
  Sender sender(SenderOptions{.max_payload = 10});
  std::string a(25, 'a'), b(3, 'b');
  asio::const_buffer parts[] = {Buf(a)};
  sender.Push(parts);
  asio::const_buffer more[] = {Buf(b)};
  sender.Push(more);
  std::vector<const Sender::Segment*> out = sender.Collect(Clock::now());
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]->payload.size(), 10u);
  EXPECT_EQ(out[2]->payload, "aaaaa");
  EXPECT_EQ(out[3]->payload, "bbb");
  EXPECT_EQ(out[3]->seq, 4u);
}

TEST(ArqTest, WindowLimitsWhatIsInFlightAndBuffered) {
  Sender sender(SenderOptions{.max_payload = 100, .buffer_limit = 300, .initial_peer_window = 250});
  std::string w(200, 'x');
  asio::const_buffer b[] = {Buf(w)};
  EXPECT_TRUE(sender.CanAccept(200));
  sender.Push(b);
  EXPECT_FALSE(sender.CanAccept(200));  // all or nothing
  EXPECT_TRUE(sender.CanAccept(100));
  sender.Push(std::span(b, 1).first(1));  // 200 more: over the limit only because allowed above
  Clock::time_point t = Clock::now();
  EXPECT_EQ(sender.Collect(t).size(), 2u);  // 250-byte window: two datagrams of 100
  EXPECT_EQ(sender.OnAck(3, 0, 250, t), 2u);
  EXPECT_EQ(sender.Collect(t).size(), 2u);
  EXPECT_EQ(sender.OnAck(3, 0, 0, t), 0u);  // stale-equal ack, zero window
  EXPECT_TRUE(sender.Collect(t).empty());
}

TEST(ArqTest, TimeoutRetransmitsAndBacksOff) {
  Sender sender(SenderOptions{.max_payload = 10});
  std::string w = "hello";
  asio::const_buffer b[] = {Buf(w)};
  sender.Push(b);
  Clock::time_point t = Clock::now();
  ASSERT_EQ(sender.Collect(t).size(), 1u);
  EXPECT_EQ(sender.rto(), std::chrono::milliseconds(20));
  EXPECT_TRUE(sender.Collect(t + std::chrono::milliseconds(19)).empty());
  EXPECT_EQ(sender.Collect(t + std::chrono::milliseconds(20)).size(), 1u);
  EXPECT_EQ(sender.rto(), std::chrono::milliseconds(40));
  EXPECT_EQ(sender.retransmits(), 1u);
  // Karn: the ack of a retransmitted datagram gives no sample; the RTO stays backed off.
  sender.OnAck(2, 0, 1 << 20, t + std::chrono::milliseconds(21));
  EXPECT_EQ(sender.rto(), std::chrono::milliseconds(40));
  EXPECT_TRUE(sender.idle());
}

TEST(ArqTest, RttSamplesSetTheRtoWithinItsClamp) {
  Sender sender;
  Clock::time_point t = Clock::now();
  std::string w = "x";
  asio::const_buffer b[] = {Buf(w)};
  for (int i = 0; i < 20; ++i) {
    sender.Push(b);
    sender.Collect(t);
    t += std::chrono::microseconds(100);
    sender.OnAck(static_cast<uint32_t>(sender.next_seq()), 0, 1 << 20, t);
  }
  EXPECT_EQ(sender.rto(), std::chrono::milliseconds(2));  // 100 µs RTT, clamped up to 2 ms
}

TEST(ArqTest, SackEvidenceFastRetransmitsTheHole) {
  Sender sender(SenderOptions{.max_payload = 1});
  std::string w = "abcde";
  asio::const_buffer b[] = {Buf(w)};
  sender.Push(b);
  Clock::time_point t = Clock::now();
  ASSERT_EQ(sender.Collect(t).size(), 5u);
  // Seq 1 lost; 2, 3, 4 arrived: ack 1, SACK bits for 2..4 (bit i: seq ack + 1 + i).
  sender.OnAck(1, 0b111, 1 << 20, t);
  const Clock::duration rto = sender.rto();  // from the SACKed datagrams' RTT samples
  std::vector<const Sender::Segment*> again = sender.Collect(t);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0]->seq, 1u);
  EXPECT_EQ(sender.rto(), rto) << "a fast retransmit does not back off";
  EXPECT_TRUE(sender.Collect(t).empty()) << "once per hole";
}

TEST(ArqTest, ReceiverDropsDuplicatesStaleAndBeyondTheWindow) {
  Receiver r(100);
  std::string p = "abc";
  auto data = std::span(reinterpret_cast<const std::byte*>(p.data()), p.size());
  EXPECT_EQ(r.OnData(2, data, false), Receiver::Result::kAccepted);  // out of order, held
  EXPECT_EQ(r.sack(), 1u);
  EXPECT_EQ(r.OnData(2, data, false), Receiver::Result::kDuplicate);
  EXPECT_EQ(r.readable(), 0u);
  EXPECT_EQ(r.OnData(1, data, false), Receiver::Result::kAccepted);
  EXPECT_EQ(r.readable(), 6u);
  EXPECT_EQ(r.ack(), 3u);
  EXPECT_EQ(r.OnData(1, data, false), Receiver::Result::kDuplicate);  // stale retransmit
  EXPECT_EQ(r.OnData(3 + kMaxInFlight, data, false), Receiver::Result::kOutOfWindow);
  std::string big(95, 'x');
  EXPECT_EQ(
      r.OnData(3, std::span(reinterpret_cast<const std::byte*>(big.data()), big.size()), false),
      Receiver::Result::kNoRoom);
  EXPECT_EQ(r.window(), 94u);
}

TEST(ArqTest, FinIsDeliveredAfterAllDataAndNothingAfterIt) {
  Receiver r;
  std::string p = "xy";
  auto data = std::span(reinterpret_cast<const std::byte*>(p.data()), p.size());
  EXPECT_EQ(r.OnData(3, {}, true), Receiver::Result::kAccepted);  // FIN first, out of order
  EXPECT_FALSE(r.fin_received());
  EXPECT_EQ(r.OnData(4, data, false), Receiver::Result::kOutOfWindow);  // past the FIN
  EXPECT_EQ(r.OnData(2, data, false), Receiver::Result::kAccepted);
  EXPECT_FALSE(r.fin_received());
  EXPECT_EQ(r.OnData(1, data, false), Receiver::Result::kAccepted);
  EXPECT_TRUE(r.fin_received());
  std::string out(10, '\0');
  EXPECT_EQ(r.Read(std::span(reinterpret_cast<std::byte*>(out.data()), out.size())), 4u);
}

TEST(ArqTest, SeqWidensAcrossTheWrap) {
  EXPECT_EQ(Widen(5, (uint64_t{1} << 32) - 3), (uint64_t{1} << 32) + 5);
  EXPECT_EQ(Widen(0xfffffffe, (uint64_t{1} << 32) + 2), (uint64_t{1} << 32) - 2);
  EXPECT_EQ(Widen(7, 7), 7u);
}

}  // namespace
}  // namespace courier::transport::udp
