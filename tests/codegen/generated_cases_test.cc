// protoc-gen-courier's case set (tests/codegen/protos/*.proto) generated, compiled and served
// over every registered transport: each service's methods through its generated stub in the three
// client styles (coroutine, completion token, blocking), the three kinds of streaming method in
// each style, default handlers, method-name constants, awkward names reaching their own
// handlers, and proto2 and lite messages.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "asio/io_context.hpp"
#include "asio/use_future.hpp"
#include "collisions.courier.h"
#include "common/types.pb.h"
#include "deep.courier.h"
#include "gmock/gmock.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "gtest/gtest.h"
#include "importer.courier.h"
#include "keywords.courier.h"
#include "lite.courier.h"
#include "multi.courier.h"
#include "names.courier.h"
#include "nopkg.courier.h"
#include "proto2.courier.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "same.courier.h"
#include "streaming_bidi.courier.h"
#include "streaming_client.courier.h"
#include "streaming_server.courier.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"
#include "wkt.courier.h"

namespace courier {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::google::protobuf::Any;
using ::google::protobuf::Empty;
using ::google::protobuf::Timestamp;
using ::testing::HasSubstr;
using ::testing::Not;

template <typename T>
using Result = ::asio::awaitable<absl::StatusOr<T>>;

// nopkg.proto: the global namespace.
class NoPkgImpl final : public ::NoPkgService {
 public:
  Result<::NoPkgReply> Measure(ServerContext&, ::NoPkgRequest request) override {
    ::NoPkgReply reply;
    reply.set_length(static_cast<int32_t>(request.text().size()));
    reply.set_text(std::move(*request.mutable_text()));
    co_return reply;
  }
};

// deep.proto: Later is left to the generated default.
class DeepImpl final : public ::a::b::c::d::e::DeepService {
 public:
  Result<::a::b::c::d::e::Sum> Add(ServerContext&, ::a::b::c::d::e::Outer request) override {
    ::a::b::c::d::e::Sum sum;
    for (const auto& item : request.items()) sum.set_total(sum.total() + item.value());
    co_return sum;
  }
  Result<::a::b::c::d::e::Outer_Inner> Negate(ServerContext&,
                                              ::a::b::c::d::e::Outer_Inner request) override {
    request.set_value(-request.value());
    co_return request;
  }
};

// multi.proto: three services in one file.
class CalculatorImpl final : public ::multi::v1::CalculatorService {
 public:
  Result<::multi::v1::Number> Add(ServerContext&, ::multi::v1::Pair request) override {
    ::multi::v1::Number n;
    n.set_value(request.a() + request.b());
    co_return n;
  }
  Result<::multi::v1::Number> Multiply(ServerContext&, ::multi::v1::Pair request) override {
    ::multi::v1::Number n;
    n.set_value(request.a() * request.b());
    co_return n;
  }
};

class GreeterImpl final : public ::multi::v1::GreeterService {
 public:
  Result<::multi::v1::Greeting> Greet(ServerContext&, ::multi::v1::Greeting request) override {
    request.set_text(absl::StrCat("hello, ", request.name()));
    co_return request;
  }
};

class CounterImpl final : public ::multi::v1::CounterService {
 public:
  Result<::multi::v1::Number> Add(ServerContext&, ::multi::v1::Number request) override {
    total_ += request.value();
    ::multi::v1::Number n;
    n.set_value(total_);
    co_return n;
  }

 private:
  int64_t total_ = 0;
};

// importer.proto: request and response types from common/types.proto.
class GeometryImpl final : public ::app::v1::GeometryService {
 public:
  Result<::shared::types::Point> Mirror(ServerContext&, ::shared::types::Point request) override {
    ::shared::types::Point p;
    p.set_x(request.y());
    p.set_y(request.x());
    co_return p;
  }
  Result<::shared::types::Distance> Measure(ServerContext&, ::app::v1::Segment request) override {
    ::shared::types::Distance d;
    d.set_manhattan(std::abs(request.to().x() - request.from().x()) +
                    std::abs(request.to().y() - request.from().y()));
    co_return d;
  }
};

// wkt.proto: well-known types on both sides.
constexpr int64_t kNowSeconds = 1700000000;

class ClockImpl final : public ::wkt::ClockService {
 public:
  Result<Timestamp> Now(ServerContext&, Empty) override {
    Timestamp t;
    t.set_seconds(kNowSeconds);
    co_return t;
  }
  Result<Empty> Touch(ServerContext&, Timestamp request) override {
    last_touch = request;
    co_return Empty();
  }
  Result<Empty> Ping(ServerContext&, Empty) override {
    ++pings;
    co_return Empty();
  }
  Result<Any> Later(ServerContext&, Any request) override {
    Timestamp t;
    if (!request.Is<Timestamp>() || !request.UnpackTo(&t)) {
      co_return absl::InvalidArgumentError(absl::StrCat("not a Timestamp: ", request.type_url()));
    }
    t.set_seconds(t.seconds() + 1);
    Any reply;
    reply.PackFrom(t);
    co_return reply;
  }

  std::optional<Timestamp> last_touch;
  int pings = 0;
};

// same.proto: Item in, Item out, and a method named Item.
class ItemsImpl final : public ::same::ItemsService {
 public:
  Result<::same::Item> Double(ServerContext&, ::same::Item request) override {
    request.set_count(request.count() * 2);
    co_return request;
  }
  Result<::same::Item> Item(ServerContext&, ::same::Item request) override {
    request.set_name(absl::AsciiStrToUpper(request.name()));
    co_return request;
  }
};

// keywords.proto and collisions.proto: every handler answers "<proto method>|<wire name>|<text>",
// so a test sees both which override ran and which wire name reached it.
template <typename Word>
Word Tagged(const char* method, const ServerContext& ctx, const Word& request) {
  Word reply;
  reply.set_text(absl::StrCat(method, "|", ctx.method(), "|", request.text()));
  return reply;
}

class KeywordsImpl final : public ::keywords::KeywordsService {
 public:
  using Word = ::keywords::Word;
  Result<Word> delete_(ServerContext& ctx, Word r) override { co_return Tagged("delete", ctx, r); }
  Result<Word> new_(ServerContext& ctx, Word r) override { co_return Tagged("new", ctx, r); }
  Result<Word> class_(ServerContext& ctx, Word r) override { co_return Tagged("class", ctx, r); }
  Result<Word> Register(ServerContext& ctx, Word r) override {
    co_return Tagged("Register", ctx, r);
  }
  Result<Word> Stub(ServerContext& ctx, Word r) override { co_return Tagged("Stub", ctx, r); }
  Result<Word> Service(ServerContext& ctx, Word r) override { co_return Tagged("Service", ctx, r); }
  Result<Word> Call(ServerContext& ctx, Word r) override { co_return Tagged("Call", ctx, r); }
  Result<Word> Say(ServerContext& ctx, Word r) override { co_return Tagged("Say", ctx, r); }
  Result<Word> AsyncSay_(ServerContext& ctx, Word r) override {
    co_return Tagged("AsyncSay", ctx, r);
  }
  Result<Word> BlockingSay_(ServerContext& ctx, Word r) override {
    co_return Tagged("BlockingSay", ctx, r);
  }
};

class CollideImpl final : public ::collisions::CollideService {
 public:
  using Word = ::collisions::Word;
  Result<Word> CollideService_(ServerContext& ctx, Word r) override {
    co_return Tagged("CollideService", ctx, r);
  }
  Result<Word> CollideStub_(ServerContext& ctx, Word r) override {
    co_return Tagged("CollideStub", ctx, r);
  }
  Result<Word> AddMethod_(ServerContext& ctx, Word r) override {
    co_return Tagged("AddMethod", ctx, r);
  }
  Result<Word> AddRawMethod_(ServerContext& ctx, Word r) override {
    co_return Tagged("AddRawMethod", ctx, r);
  }
  Result<Word> methods_(ServerContext& ctx, Word r) override {
    co_return Tagged("methods", ctx, r);
  }
  Result<Word> channel__(ServerContext& ctx, Word r) override {
    co_return Tagged("channel", ctx, r);
  }
  Result<Word> channel___(ServerContext& ctx, Word r) override {
    co_return Tagged("channel_", ctx, r);
  }
  Result<Word> Get(ServerContext& ctx, Word r) override { co_return Tagged("Get", ctx, r); }
  Result<Word> get(ServerContext& ctx, Word r) override { co_return Tagged("get", ctx, r); }
  // Parameter names: no clash in the class, so not renamed.
  Result<Word> request(ServerContext& ctx, Word r) override { co_return Tagged("request", ctx, r); }
  Result<Word> ctx(ServerContext& context, Word r) override { co_return Tagged("ctx", context, r); }
  Result<Word> options(ServerContext& ctx, Word r) override { co_return Tagged("options", ctx, r); }
  Result<Word> token(ServerContext& ctx, Word r) override { co_return Tagged("token", ctx, r); }
};

// names.proto: namespace store::kv holding class store, class courier and service kv.
class KvImpl final : public ::store::kv::kvService {
 public:
  Result<::store::kv::store> store(ServerContext&, ::store::kv::store request) override {
    ::store::kv::store swapped;
    swapped.set_key(request.value());
    swapped.set_value(request.key());
    co_return swapped;
  }
  Result<::store::kv::courier> kv(ServerContext&, ::store::kv::store request) override {
    ::store::kv::courier reply;
    reply.set_parcel(request.key());
    co_return reply;
  }
  Result<::store::kv::courier> Deliver(ServerContext&, ::store::kv::courier request) override {
    request.set_parcel(absl::StrCat("delivered ", request.parcel()));
    co_return request;
  }
};

// proto2.proto. An order with id "forget" gets a receipt missing its required id, which must not
// serialize on the server.
class OrdersImpl final : public ::legacy::v2::OrdersService {
 public:
  Result<::legacy::v2::Receipt> Place(ServerContext&, ::legacy::v2::Order request) override {
    ::legacy::v2::Receipt receipt;
    if (request.id() != "forget") receipt.set_id(request.id());
    receipt.set_quantity(request.quantity());
    receipt.set_quantity_was_set(request.has_quantity());
    receipt.set_tag_count(request.tags_size());
    co_return receipt;
  }
};

// lite.proto.
class LiteCounterImpl final : public ::lite::LiteCounterService {
 public:
  Result<::lite::Counter> Bump(ServerContext&, ::lite::Counter request) override {
    request.set_value(request.value() + 1);
    co_return request;
  }
};

// Every service of the case set, served together.
// Streaming: Fetch sends `path` back in chunks of one byte each; Send sums the bytes; Talk
// answers each line with it upper-cased.
class DownloadImpl final : public ::streaming::server::DownloadService {
  Result<::streaming::server::Chunk> Size(ServerContext&, ::streaming::server::Request r) override {
    ::streaming::server::Chunk chunk;
    chunk.set_data(std::to_string(r.path().size()));
    co_return chunk;
  }
  ::asio::awaitable<absl::Status> Fetch(ServerContext&, ::streaming::server::Request r,
                                        ServerWriter<::streaming::server::Chunk>& out) override {
    for (char c : r.path()) {
      ::streaming::server::Chunk chunk;
      chunk.set_data(std::string(1, c));
      if (absl::Status s = co_await out.Write(chunk); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

class UploadImpl final : public ::streaming::client::UploadService {
  Result<::streaming::client::Summary> Check(ServerContext&, ::streaming::client::Chunk c) override {
    ::streaming::client::Summary summary;
    summary.set_bytes(static_cast<int64_t>(c.data().size()));
    co_return summary;
  }
  Result<::streaming::client::Summary> Send(
      ServerContext&, ServerReader<::streaming::client::Chunk>& in) override {
    ::streaming::client::Summary summary;
    while (auto chunk = co_await in.Read()) {
      summary.set_bytes(summary.bytes() + static_cast<int64_t>(chunk->data().size()));
    }
    co_return summary;
  }
};

class ChatImpl final : public ::streaming::bidi::ChatService {
  Result<::streaming::bidi::Line> Hello(ServerContext&, ::streaming::bidi::Line l) override {
    co_return l;
  }
  ::asio::awaitable<absl::Status> Talk(
      ServerContext&,
      ServerReaderWriter<::streaming::bidi::Line, ::streaming::bidi::Line>& stream) override {
    while (auto line = co_await stream.Read()) {
      line->set_text(absl::AsciiStrToUpper(line->text()));
      if (absl::Status s = co_await stream.Write(*line); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

struct AllServices {
  NoPkgImpl nopkg;
  DeepImpl deep;
  CalculatorImpl calculator;
  GreeterImpl greeter;
  CounterImpl counter;
  GeometryImpl geometry;
  ClockImpl clock;
  ItemsImpl items;
  KeywordsImpl keywords;
  CollideImpl collide;
  KvImpl kv;
  OrdersImpl orders;
  LiteCounterImpl lite;
  DownloadImpl download;
  UploadImpl upload;
  ChatImpl chat;

  std::vector<ServiceBase*> All() {
    return {&nopkg, &deep,    &calculator, &greeter, &counter, &geometry, &clock, &items,
            &keywords, &collide, &kv, &orders, &lite, &download, &upload, &chat};
  }
};

class GeneratedCasesTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Server>(io_.get_executor());
    for (ServiceBase* service : services_.All()) ASSERT_THAT(server_->AddService(*service), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    uri_ = endpoint->ToString();
    absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io_.get_executor(), uri_);
    ASSERT_THAT(channel, IsOk());
    channel_ = *channel;
  }

  // co_await style: runs the stub's coroutine on this thread, which also runs the server.
  template <typename T>
  T Await(::asio::awaitable<T> op) {
    return RunCoro(io_, std::move(op));
  }

  // Completion-token styles: runs the server and the channel until the callback stored a result
  // in `slot`, or until the future is ready.
  template <typename T>
  absl::StatusOr<T> Wait(std::optional<absl::StatusOr<T>>& slot) {
    EXPECT_TRUE(RunUntil(io_, [&] { return slot.has_value(); }));
    if (!slot) return absl::DeadlineExceededError("test: the callback never ran");
    return std::move(*slot);
  }
  template <typename T>
  T Wait(std::future<T> future) {
    EXPECT_TRUE(RunUntil(io_, [&] {
      return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    }));
    return future.get();
  }

  // Blocking style: `call` runs on another thread, on a channel with its own reactor thread
  // (Channel::Create(uri)), while this thread runs the server.
  std::shared_ptr<Channel> BlockingChannel() {
    if (!blocking_channel_) {
      absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(uri_);
      EXPECT_THAT(channel, IsOk());
      if (channel.ok()) blocking_channel_ = *channel;
    }
    return blocking_channel_;
  }
  template <typename Fn>
  auto Blocking(Fn call) -> decltype(call()) {
    return Wait(std::async(std::launch::async, std::move(call)));
  }

  AllServices services_;  // outlives the io_context, whose pending handlers refer to it
  ::asio::io_context io_;
  std::unique_ptr<Server> server_;
  std::string uri_;
  std::shared_ptr<Channel> channel_;
  std::shared_ptr<Channel> blocking_channel_;
};

TEST_P(GeneratedCasesTest, NoPackageInEveryStyle) {
  ::NoPkgStub stub(channel_);
  ::NoPkgRequest request;
  request.set_text("hello");

  absl::StatusOr<::NoPkgReply> reply = Await(stub.Measure(request));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->text(), "hello");
  EXPECT_EQ(reply->length(), 5);

  std::optional<absl::StatusOr<::NoPkgReply>> slot;
  request.set_text("callback");
  stub.AsyncMeasure(request, {}, [&](absl::StatusOr<::NoPkgReply> r) { slot = std::move(r); });
  reply = Wait(slot);
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->length(), 8);

  request.set_text("future!");
  reply = Wait(stub.AsyncMeasure(request, {}, ::asio::use_future));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->text(), "future!");
  EXPECT_EQ(reply->length(), 7);

  ::NoPkgStub blocking(BlockingChannel());
  request.set_text("blocking call");
  reply = Blocking([&] { return blocking.BlockingMeasure(request); });
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->length(), 13);
}

TEST_P(GeneratedCasesTest, DeepPackageAndNestedMessages) {
  ::a::b::c::d::e::DeepStub stub(channel_);
  ::a::b::c::d::e::Outer outer;
  for (int v : {1, 2, 39}) outer.add_items()->set_value(v);
  absl::StatusOr<::a::b::c::d::e::Sum> sum = Await(stub.Add(outer));
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(sum->total(), 42);

  ::a::b::c::d::e::Outer_Inner inner;
  inner.set_value(5);
  absl::StatusOr<::a::b::c::d::e::Outer_Inner> negated =
      Wait(stub.AsyncNegate(inner, {}, ::asio::use_future));
  ASSERT_THAT(negated, IsOk());
  EXPECT_EQ(negated->value(), -5);

  // Later is not overridden: the generated default answers.
  std::optional<absl::StatusOr<::a::b::c::d::e::Sum>> slot;
  stub.AsyncLater(::a::b::c::d::e::Sum(), {},
                  [&](absl::StatusOr<::a::b::c::d::e::Sum> r) { slot = std::move(r); });
  EXPECT_THAT(Wait(slot), StatusIs(absl::StatusCode::kUnimplemented));
  // The connection is fine afterwards.
  EXPECT_THAT(Await(stub.Add(outer)), IsOk());
}

TEST_P(GeneratedCasesTest, ThreeServicesInOneFile) {
  ::multi::v1::CalculatorStub calculator(channel_);
  ::multi::v1::GreeterStub greeter(channel_);
  ::multi::v1::CounterStub counter(channel_);

  ::multi::v1::Pair pair;
  pair.set_a(6);
  pair.set_b(7);
  absl::StatusOr<::multi::v1::Number> n = Await(calculator.Add(pair));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(n->value(), 13);

  ::multi::v1::CalculatorStub blocking(BlockingChannel());
  n = Blocking([&] { return blocking.BlockingMultiply(pair); });
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(n->value(), 42);

  ::multi::v1::Greeting greeting;
  greeting.set_name("ada");
  std::optional<absl::StatusOr<::multi::v1::Greeting>> slot;
  greeter.AsyncGreet(greeting, {},
                     [&](absl::StatusOr<::multi::v1::Greeting> r) { slot = std::move(r); });
  absl::StatusOr<::multi::v1::Greeting> greeted = Wait(slot);
  ASSERT_THAT(greeted, IsOk());
  EXPECT_EQ(greeted->text(), "hello, ada");
  EXPECT_EQ(greeted->name(), "ada");

  // Counter.Add and Calculator.Add share a message type and a method name, not a handler.
  ::multi::v1::Number five;
  five.set_value(5);
  EXPECT_EQ(Wait(counter.AsyncAdd(five, {}, ::asio::use_future)).value().value(), 5);
  EXPECT_EQ(Wait(counter.AsyncAdd(five, {}, ::asio::use_future)).value().value(), 10);
  EXPECT_EQ(Await(calculator.Add(pair)).value().value(), 13);
}

TEST_P(GeneratedCasesTest, TypesImportedFromAnotherFileAndPackage) {
  ::app::v1::GeometryStub stub(channel_);
  ::shared::types::Point point;
  point.set_x(3);
  point.set_y(-4);
  absl::StatusOr<::shared::types::Point> mirrored = Await(stub.Mirror(point));
  ASSERT_THAT(mirrored, IsOk());
  EXPECT_EQ(mirrored->x(), -4);
  EXPECT_EQ(mirrored->y(), 3);

  ::app::v1::Segment segment;
  *segment.mutable_from() = point;
  segment.mutable_to()->set_x(-1);
  segment.mutable_to()->set_y(6);
  ::app::v1::GeometryStub blocking(BlockingChannel());
  absl::StatusOr<::shared::types::Distance> distance =
      Blocking([&] { return blocking.BlockingMeasure(segment); });
  ASSERT_THAT(distance, IsOk());
  EXPECT_EQ(distance->manhattan(), 14);
}

TEST_P(GeneratedCasesTest, WellKnownTypes) {
  ::wkt::ClockStub stub(channel_);
  absl::StatusOr<Timestamp> now = Await(stub.Now(Empty()));
  ASSERT_THAT(now, IsOk());
  EXPECT_EQ(now->seconds(), kNowSeconds);

  Timestamp touch;
  touch.set_seconds(12345);
  touch.set_nanos(678);
  ::wkt::ClockStub blocking(BlockingChannel());
  EXPECT_THAT(Blocking([&] { return blocking.BlockingTouch(touch); }), IsOk());
  ASSERT_TRUE(services_.clock.last_touch.has_value());
  EXPECT_EQ(services_.clock.last_touch->seconds(), 12345);
  EXPECT_EQ(services_.clock.last_touch->nanos(), 678);

  std::optional<absl::StatusOr<Empty>> slot;
  stub.AsyncPing(Empty(), {}, [&](absl::StatusOr<Empty> r) { slot = std::move(r); });
  EXPECT_THAT(Wait(slot), IsOk());
  EXPECT_EQ(services_.clock.pings, 1);

  Any any;
  any.PackFrom(touch);
  absl::StatusOr<Any> later = Wait(stub.AsyncLater(any, {}, ::asio::use_future));
  ASSERT_THAT(later, IsOk());
  Timestamp unpacked;
  ASSERT_TRUE(later->UnpackTo(&unpacked));
  EXPECT_EQ(unpacked.seconds(), 12346);
  EXPECT_EQ(unpacked.nanos(), 678);

  any.PackFrom(Empty());
  EXPECT_THAT(Await(stub.Later(any)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("google.protobuf.Empty")));
}

TEST_P(GeneratedCasesTest, SameRequestAndResponseTypeAndAMethodNamedLikeIt) {
  ::same::ItemsStub stub(channel_);
  ::same::Item item;
  item.set_name("bolt");
  item.set_count(21);
  absl::StatusOr<::same::Item> doubled = Await(stub.Double(item));
  ASSERT_THAT(doubled, IsOk());
  EXPECT_EQ(doubled->name(), "bolt");
  EXPECT_EQ(doubled->count(), 42);

  absl::StatusOr<::same::Item> upper = Wait(stub.AsyncItem(item, {}, ::asio::use_future));
  ASSERT_THAT(upper, IsOk());
  EXPECT_EQ(upper->name(), "BOLT");
  EXPECT_EQ(upper->count(), 21);
}

// One row per method: its proto name and how the test calls it through the generated stub.
template <typename Word>
struct MethodCall {
  std::string proto_name;
  std::function<absl::StatusOr<Word>(const Word&)> call;
};

template <typename Word>
Word MakeWord(std::string text) {
  Word w;
  w.set_text(std::move(text));
  return w;
}

TEST_P(GeneratedCasesTest, KeywordMethodsReachTheirOwnHandlers) {
  using ::keywords::Word;
  ::keywords::KeywordsStub stub(channel_);
  ::keywords::KeywordsStub blocking(BlockingChannel());
  auto callback = [&](auto start) {
    std::optional<absl::StatusOr<Word>> slot;
    start([&](absl::StatusOr<Word> r) { slot = std::move(r); });
    return Wait(slot);
  };
  const std::vector<MethodCall<Word>> calls = {
      {"delete", [&](const Word& w) { return Await(stub.delete_(w)); }},
      {"new", [&](const Word& w) { return callback([&](auto cb) { stub.Asyncnew_(w, {}, cb); }); }},
      {"class", [&](const Word& w) { return Wait(stub.Asyncclass_(w, {}, ::asio::use_future)); }},
      {"Register",
       [&](const Word& w) { return Blocking([&] { return blocking.BlockingRegister(w); }); }},
      {"Stub", [&](const Word& w) { return Await(stub.Stub(w)); }},
      {"Service",
       [&](const Word& w) { return callback([&](auto cb) { stub.AsyncService(w, {}, cb); }); }},
      {"Call", [&](const Word& w) { return Wait(stub.AsyncCall(w, {}, ::asio::use_future)); }},
      {"Say", [&](const Word& w) { return Await(stub.Say(w)); }},
      {"AsyncSay", [&](const Word& w) { return Await(stub.AsyncSay_(w)); }},
      {"BlockingSay", [&](const Word& w) { return Await(stub.BlockingSay_(w)); }},
  };
  for (const MethodCall<Word>& method : calls) {
    SCOPED_TRACE(method.proto_name);
    absl::StatusOr<Word> reply = method.call(MakeWord<Word>("x"));
    ASSERT_THAT(reply, IsOk());
    EXPECT_EQ(reply->text(),
              absl::StrCat(method.proto_name, "|/keywords.Keywords/", method.proto_name, "|x"));
  }

  // The stub's Async/Blocking forms of Say reach Say, those of AsyncSay and BlockingSay reach
  // theirs.
  const std::vector<MethodCall<Word>> forms = {
      {"Say", [&](const Word& w) { return Wait(stub.AsyncSay(w, {}, ::asio::use_future)); }},
      {"Say", [&](const Word& w) { return Blocking([&] { return blocking.BlockingSay(w); }); }},
      {"AsyncSay",
       [&](const Word& w) { return Wait(stub.AsyncAsyncSay_(w, {}, ::asio::use_future)); }},
      {"AsyncSay",
       [&](const Word& w) { return Blocking([&] { return blocking.BlockingAsyncSay_(w); }); }},
      {"BlockingSay",
       [&](const Word& w) { return Wait(stub.AsyncBlockingSay_(w, {}, ::asio::use_future)); }},
      {"BlockingSay",
       [&](const Word& w) { return Blocking([&] { return blocking.BlockingBlockingSay_(w); }); }},
  };
  for (const MethodCall<Word>& method : forms) {
    SCOPED_TRACE(method.proto_name);
    absl::StatusOr<Word> reply = method.call(MakeWord<Word>("y"));
    ASSERT_THAT(reply, IsOk());
    EXPECT_EQ(reply->text(),
              absl::StrCat(method.proto_name, "|/keywords.Keywords/", method.proto_name, "|y"));
  }
}

TEST_P(GeneratedCasesTest, MethodsNamedLikeGeneratedNamesReachTheirOwnHandlers) {
  using ::collisions::Word;
  ::collisions::CollideStub stub(channel_);
  const std::vector<MethodCall<Word>> calls = {
      {"CollideService", [&](const Word& w) { return Await(stub.CollideService_(w)); }},
      {"CollideStub", [&](const Word& w) { return Await(stub.CollideStub_(w)); }},
      {"AddMethod", [&](const Word& w) { return Await(stub.AddMethod_(w)); }},
      {"AddRawMethod", [&](const Word& w) { return Await(stub.AddRawMethod_(w)); }},
      {"methods", [&](const Word& w) { return Await(stub.methods_(w)); }},
      {"channel", [&](const Word& w) { return Await(stub.channel__(w)); }},
      {"channel_", [&](const Word& w) { return Await(stub.channel___(w)); }},
      {"Get", [&](const Word& w) { return Await(stub.Get(w)); }},
      {"get", [&](const Word& w) { return Wait(stub.Asyncget(w, {}, ::asio::use_future)); }},
      {"request", [&](const Word& w) { return Await(stub.request(w)); }},
      {"ctx", [&](const Word& w) { return Wait(stub.Asyncctx(w, {}, ::asio::use_future)); }},
      {"options", [&](const Word& w) { return Await(stub.options(w)); }},
      {"token", [&](const Word& w) { return Wait(stub.Asynctoken(w, {}, ::asio::use_future)); }},
  };
  for (const MethodCall<Word>& method : calls) {
    SCOPED_TRACE(method.proto_name);
    absl::StatusOr<Word> reply = method.call(MakeWord<Word>("z"));
    ASSERT_THAT(reply, IsOk());
    EXPECT_EQ(reply->text(),
              absl::StrCat(method.proto_name, "|/collisions.Collide/", method.proto_name, "|z"));
  }
  // The stub still hands out its channel.
  EXPECT_EQ(stub.channel(), channel_);
}

TEST_P(GeneratedCasesTest, NamesLikeTheirPackageComponents) {
  ::store::kv::kvStub stub(channel_);
  ::store::kv::store entry;
  entry.set_key("k");
  entry.set_value("v");
  absl::StatusOr<::store::kv::store> swapped = Await(stub.store(entry));
  ASSERT_THAT(swapped, IsOk());
  EXPECT_EQ(swapped->key(), "v");
  EXPECT_EQ(swapped->value(), "k");

  ::store::kv::kvStub blocking(BlockingChannel());
  absl::StatusOr<::store::kv::courier> parcel =
      Blocking([&] { return blocking.Blockingkv(entry); });
  ASSERT_THAT(parcel, IsOk());
  EXPECT_EQ(parcel->parcel(), "k");

  absl::StatusOr<::store::kv::courier> delivered =
      Wait(stub.AsyncDeliver(*parcel, {}, ::asio::use_future));
  ASSERT_THAT(delivered, IsOk());
  EXPECT_EQ(delivered->parcel(), "delivered k");
}

TEST_P(GeneratedCasesTest, Proto2RequiredOptionalAndDefaults) {
  ::legacy::v2::OrdersStub stub(channel_);
  ::legacy::v2::Order order;
  order.set_id("o-1");
  absl::StatusOr<::legacy::v2::Receipt> receipt = Await(stub.Place(order));
  ASSERT_THAT(receipt, IsOk());
  EXPECT_EQ(receipt->id(), "o-1");
  EXPECT_EQ(receipt->quantity(), 3);  // the proto2 default
  EXPECT_FALSE(receipt->quantity_was_set());
  EXPECT_EQ(receipt->tag_count(), 0);

  order.set_quantity(5);
  order.add_tags("a");
  order.add_tags("b");
  ::legacy::v2::OrdersStub blocking(BlockingChannel());
  receipt = Blocking([&] { return blocking.BlockingPlace(order); });
  ASSERT_THAT(receipt, IsOk());
  EXPECT_EQ(receipt->quantity(), 5);
  EXPECT_TRUE(receipt->quantity_was_set());
  EXPECT_EQ(receipt->tag_count(), 2);

  // Bytes without the required id do not parse as an Order on the server.
  absl::StatusOr<std::string> raw =
      Await(channel_->Call(::legacy::v2::OrdersService::kPlaceMethodName, ""));
  EXPECT_THAT(raw, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("legacy.v2.Order")));

  // A handler's response missing a required field is the server's error, not a crash.
  order.set_id("forget");
  EXPECT_THAT(Await(stub.Place(order)), StatusIs(absl::StatusCode::kInternal));
}

// A request missing a required field fails as a Status naming its type, in every style; it does
// not throw (Debian's libprotobuf throws from SerializeToString on such a message).
TEST_P(GeneratedCasesTest, Proto2RequestMissingARequiredFieldIsAnError) {
  ::legacy::v2::OrdersStub stub(channel_);
  ::legacy::v2::Order no_id;
  no_id.set_quantity(1);
  absl::StatusOr<::legacy::v2::Receipt> r = absl::UnknownError("not run");
  EXPECT_NO_THROW(r = Await(stub.Place(no_id)));
  EXPECT_THAT(r, Not(IsOk()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("legacy.v2.Order"));
  r = Wait(stub.AsyncPlace(no_id, {}, ::asio::use_future));
  EXPECT_THAT(r, Not(IsOk()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("legacy.v2.Order"));
  ::legacy::v2::OrdersStub blocking(BlockingChannel());
  r = Blocking([&] { return blocking.BlockingPlace(no_id); });
  EXPECT_THAT(r, Not(IsOk()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("legacy.v2.Order"));
}

// A response whose bytes do not parse as the generated response type is kInternal.
TEST_P(GeneratedCasesTest, Proto2ResponseMissingARequiredFieldIsInternal) {
  GenericService raw;
  raw.AddRawMethod(
      ::legacy::v2::OrdersService::kPlaceMethodName,
      [](ServerContext&, std::string_view) -> ::asio::awaitable<absl::StatusOr<std::string>> {
        co_return std::string();  // a Receipt without its required id
      });
  Server server(io_.get_executor());
  ASSERT_THAT(server.AddService(raw), IsOk());
  absl::StatusOr<Endpoint> endpoint = server.Listen(GetParam().loopback_endpoint().ToString());
  ASSERT_THAT(endpoint, IsOk());
  ::legacy::v2::OrdersStub stub(Channel::Create(io_.get_executor(), endpoint->ToString()).value());
  ::legacy::v2::Order order;
  order.set_id("o-2");
  EXPECT_THAT(Await(stub.Place(order)),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("legacy.v2.Receipt")));
  RunCoro(io_, server.Shutdown());
}

TEST_P(GeneratedCasesTest, LiteRuntimeMessages) {
  ::lite::LiteCounterStub stub(channel_);
  ::lite::Counter counter;
  counter.set_value(41);
  absl::StatusOr<::lite::Counter> bumped = Await(stub.Bump(counter));
  ASSERT_THAT(bumped, IsOk());
  EXPECT_EQ(bumped->value(), 42);

  ::lite::LiteCounterStub blocking(BlockingChannel());
  bumped = Blocking([&] { return blocking.BlockingBump(*bumped); });
  ASSERT_THAT(bumped, IsOk());
  EXPECT_EQ(bumped->value(), 43);
}

// A generated service base with nothing overridden answers UNIMPLEMENTED for every method, in
// every style.
TEST_P(GeneratedCasesTest, UnoverriddenMethodsAreUnimplemented) {
  ::wkt::ClockService bare;
  Server server(io_.get_executor());
  ASSERT_THAT(server.AddService(bare), IsOk());
  absl::StatusOr<Endpoint> endpoint = server.Listen(GetParam().loopback_endpoint().ToString());
  ASSERT_THAT(endpoint, IsOk());
  ::wkt::ClockStub stub(Channel::Create(io_.get_executor(), endpoint->ToString()).value());
  EXPECT_THAT(Await(stub.Now(Empty())), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(Wait(stub.AsyncTouch(Timestamp(), {}, ::asio::use_future)),
              StatusIs(absl::StatusCode::kUnimplemented));
  std::optional<absl::StatusOr<Empty>> slot;
  stub.AsyncPing(Empty(), {}, [&](absl::StatusOr<Empty> r) { slot = std::move(r); });
  EXPECT_THAT(Wait(slot), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(Await(stub.Later(Any())), StatusIs(absl::StatusCode::kUnimplemented));
  RunCoro(io_, server.Shutdown());
}

TEST_P(GeneratedCasesTest, ServerStreamingInEveryStyle) {
  ::streaming::server::DownloadStub stub(channel_);
  ::streaming::server::Request request;
  request.set_path("abc");
  std::string got;
  absl::Status status = Await([&]() -> ::asio::awaitable<absl::Status> {
    auto call = stub.Fetch(request);
    while (auto chunk = co_await call.Read()) got += chunk->data();
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, IsOk());
  EXPECT_EQ(got, "abc");

  // Completion tokens: a future per operation.
  request.set_path("xy");
  auto call = stub.Fetch(request);
  std::string by_future;
  for (;;) {
    std::optional<::streaming::server::Chunk> chunk = Wait(call.AsyncRead(::asio::use_future));
    if (!chunk) break;
    by_future += chunk->data();
  }
  EXPECT_THAT(Wait(call.AsyncFinish(::asio::use_future)), IsOk());
  EXPECT_EQ(by_future, "xy");

  ::streaming::server::DownloadStub blocking(BlockingChannel());
  request.set_path("blocking");
  std::string by_blocking = Blocking([&] {
    auto reader = blocking.BlockingFetch(request);
    std::string out;
    while (auto chunk = reader.Read()) out += chunk->data();
    EXPECT_THAT(reader.Finish(), IsOk());
    return out;
  });
  EXPECT_EQ(by_blocking, "blocking");
  EXPECT_THAT(Await(stub.Size(request)), IsOk());  // the unary method beside it
}

TEST_P(GeneratedCasesTest, ClientStreamingInEveryStyle) {
  ::streaming::client::UploadStub stub(channel_);
  ::streaming::client::Chunk chunk;
  chunk.set_data("12345");
  absl::StatusOr<::streaming::client::Summary> summary =
      Await([&]() -> Result<::streaming::client::Summary> {
        auto call = stub.Send();
        for (int i = 0; i < 3; ++i) {
          if (absl::Status s = co_await call.Write(chunk); !s.ok()) co_return s;
        }
        EXPECT_THAT(call.WritesDone(), IsOk());
        co_return co_await call.Finish();
      }());
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->bytes(), 15);

  auto call = stub.Send();
  EXPECT_THAT(Wait(call.AsyncWrite(chunk, ::asio::use_future)), IsOk());
  std::optional<absl::StatusOr<::streaming::client::Summary>> slot;
  call.AsyncFinish([&](absl::StatusOr<::streaming::client::Summary> r) { slot = std::move(r); });
  summary = Wait(slot);
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->bytes(), 5);

  ::streaming::client::UploadStub blocking(BlockingChannel());
  summary = Blocking([&] {
    auto writer = blocking.BlockingSend();
    EXPECT_THAT(writer.Write(chunk), IsOk());
    EXPECT_THAT(writer.Write(chunk), IsOk());
    return writer.Finish();
  });
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->bytes(), 10);
}

TEST_P(GeneratedCasesTest, BidiStreamingInEveryStyle) {
  ::streaming::bidi::ChatStub stub(channel_);
  ::streaming::bidi::Line line;
  std::vector<std::string> answers;
  absl::Status status = Await([&]() -> ::asio::awaitable<absl::Status> {
    auto call = stub.Talk();
    for (const char* text : {"hi", "there"}) {
      line.set_text(text);
      if (absl::Status s = co_await call.Write(line); !s.ok()) co_return s;
      auto answer = co_await call.Read();
      if (!answer) co_return absl::InternalError("no answer");
      answers.push_back(answer->text());
    }
    EXPECT_THAT(call.WritesDone(), IsOk());
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, IsOk());
  EXPECT_THAT(answers, ::testing::ElementsAre("HI", "THERE"));

  auto call = stub.Talk();
  line.set_text("token");
  EXPECT_THAT(Wait(call.AsyncWrite(line, ::asio::use_future)), IsOk());
  std::optional<::streaming::bidi::Line> answer = Wait(call.AsyncRead(::asio::use_future));
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->text(), "TOKEN");
  EXPECT_THAT(call.WritesDone(), IsOk());
  EXPECT_THAT(Wait(call.AsyncFinish(::asio::use_future)), IsOk());

  ::streaming::bidi::ChatStub blocking(BlockingChannel());
  std::string echoed = Blocking([&] {
    auto both = blocking.BlockingTalk();
    ::streaming::bidi::Line l;
    l.set_text("blocking");
    EXPECT_THAT(both.Write(l), IsOk());
    auto a = both.Read();
    EXPECT_THAT(both.WritesDone(), IsOk());
    EXPECT_FALSE(both.Read().has_value());
    EXPECT_THAT(both.Finish(), IsOk());
    return a ? a->text() : std::string("none");
  });
  EXPECT_EQ(echoed, "BLOCKING");
}

TEST_P(GeneratedCasesTest, UnoverriddenStreamingMethodsAreUnimplemented) {
  ::streaming::server::DownloadService download;
  ::streaming::client::UploadService upload;
  ::streaming::bidi::ChatService chat;
  Server server(io_.get_executor());
  ASSERT_THAT(server.AddService(download), IsOk());
  ASSERT_THAT(server.AddService(upload), IsOk());
  ASSERT_THAT(server.AddService(chat), IsOk());
  absl::StatusOr<Endpoint> endpoint = server.Listen(GetParam().loopback_endpoint().ToString());
  ASSERT_THAT(endpoint, IsOk());
  std::shared_ptr<Channel> channel = Channel::Create(io_.get_executor(), endpoint->ToString()).value();
  ::streaming::server::DownloadStub d(channel);
  ::streaming::client::UploadStub u(channel);
  ::streaming::bidi::ChatStub c(channel);
  EXPECT_THAT(Await([&]() -> ::asio::awaitable<absl::Status> {
                auto call = d.Fetch(::streaming::server::Request());
                EXPECT_FALSE((co_await call.Read()).has_value());
                co_return co_await call.Finish();
              }()),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(Await([&]() -> Result<::streaming::client::Summary> {
                auto call = u.Send();
                co_return co_await call.Finish();
              }()),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(Await([&]() -> ::asio::awaitable<absl::Status> {
                auto call = c.Talk();
                co_return co_await call.Finish();
              }()),
              StatusIs(absl::StatusCode::kUnimplemented));
  RunCoro(io_, server.Shutdown());
}

INSTANTIATE_TEST_SUITE_P(AllTransports, GeneratedCasesTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

// The constants name the methods as they travel on the wire: "/<package>.<Service>/<method>",
// with the proto's spelling, whatever the C++ method is called.
TEST(GeneratedNames, MethodNameConstantsAreTheWireNames) {
  EXPECT_STREQ(::NoPkgService::kMeasureMethodName, "/NoPkg/Measure");
  EXPECT_STREQ(::a::b::c::d::e::DeepService::kAddMethodName, "/a.b.c.d.e.Deep/Add");
  EXPECT_STREQ(::a::b::c::d::e::DeepService::kNegateMethodName, "/a.b.c.d.e.Deep/Negate");
  EXPECT_STREQ(::a::b::c::d::e::DeepService::kLaterMethodName, "/a.b.c.d.e.Deep/Later");
  EXPECT_STREQ(::multi::v1::CalculatorService::kAddMethodName, "/multi.v1.Calculator/Add");
  EXPECT_STREQ(::multi::v1::CalculatorService::kMultiplyMethodName,
               "/multi.v1.Calculator/Multiply");
  EXPECT_STREQ(::multi::v1::GreeterService::kGreetMethodName, "/multi.v1.Greeter/Greet");
  EXPECT_STREQ(::multi::v1::CounterService::kAddMethodName, "/multi.v1.Counter/Add");
  EXPECT_STREQ(::app::v1::GeometryService::kMirrorMethodName, "/app.v1.Geometry/Mirror");
  EXPECT_STREQ(::app::v1::GeometryService::kMeasureMethodName, "/app.v1.Geometry/Measure");
  EXPECT_STREQ(::wkt::ClockService::kNowMethodName, "/wkt.Clock/Now");
  EXPECT_STREQ(::wkt::ClockService::kTouchMethodName, "/wkt.Clock/Touch");
  EXPECT_STREQ(::wkt::ClockService::kPingMethodName, "/wkt.Clock/Ping");
  EXPECT_STREQ(::wkt::ClockService::kLaterMethodName, "/wkt.Clock/Later");
  EXPECT_STREQ(::same::ItemsService::kDoubleMethodName, "/same.Items/Double");
  EXPECT_STREQ(::same::ItemsService::kItemMethodName, "/same.Items/Item");
  EXPECT_STREQ(::keywords::KeywordsService::kDeleteMethodName, "/keywords.Keywords/delete");
  EXPECT_STREQ(::keywords::KeywordsService::kNewMethodName, "/keywords.Keywords/new");
  EXPECT_STREQ(::keywords::KeywordsService::kClassMethodName, "/keywords.Keywords/class");
  EXPECT_STREQ(::keywords::KeywordsService::kRegisterMethodName, "/keywords.Keywords/Register");
  EXPECT_STREQ(::keywords::KeywordsService::kStubMethodName, "/keywords.Keywords/Stub");
  EXPECT_STREQ(::keywords::KeywordsService::kServiceMethodName, "/keywords.Keywords/Service");
  EXPECT_STREQ(::keywords::KeywordsService::kCallMethodName, "/keywords.Keywords/Call");
  EXPECT_STREQ(::keywords::KeywordsService::kSayMethodName, "/keywords.Keywords/Say");
  EXPECT_STREQ(::keywords::KeywordsService::kAsyncSayMethodName, "/keywords.Keywords/AsyncSay");
  EXPECT_STREQ(::keywords::KeywordsService::kBlockingSayMethodName,
               "/keywords.Keywords/BlockingSay");
  EXPECT_STREQ(::collisions::CollideService::kCollideServiceMethodName,
               "/collisions.Collide/CollideService");
  EXPECT_STREQ(::collisions::CollideService::kCollideStubMethodName,
               "/collisions.Collide/CollideStub");
  EXPECT_STREQ(::collisions::CollideService::kAddMethodMethodName, "/collisions.Collide/AddMethod");
  EXPECT_STREQ(::collisions::CollideService::kAddRawMethodMethodName,
               "/collisions.Collide/AddRawMethod");
  EXPECT_STREQ(::collisions::CollideService::kMethodsMethodName, "/collisions.Collide/methods");
  EXPECT_STREQ(::collisions::CollideService::kChannelMethodName, "/collisions.Collide/channel");
  EXPECT_STREQ(::collisions::CollideService::kChannel_MethodName, "/collisions.Collide/channel_");
  // Get and get: two constants, one per wire name.
  EXPECT_STREQ(::collisions::CollideService::kGetMethodName, "/collisions.Collide/Get");
  EXPECT_STREQ(::collisions::CollideService::kGetMethodName_, "/collisions.Collide/get");
  EXPECT_STREQ(::collisions::CollideService::kRequestMethodName, "/collisions.Collide/request");
  EXPECT_STREQ(::collisions::CollideService::kCtxMethodName, "/collisions.Collide/ctx");
  EXPECT_STREQ(::collisions::CollideService::kOptionsMethodName, "/collisions.Collide/options");
  EXPECT_STREQ(::collisions::CollideService::kTokenMethodName, "/collisions.Collide/token");
  EXPECT_STREQ(::store::kv::kvService::kStoreMethodName, "/store.kv.kv/store");
  EXPECT_STREQ(::store::kv::kvService::kKvMethodName, "/store.kv.kv/kv");
  EXPECT_STREQ(::store::kv::kvService::kDeliverMethodName, "/store.kv.kv/Deliver");
  EXPECT_STREQ(::legacy::v2::OrdersService::kPlaceMethodName, "/legacy.v2.Orders/Place");
  EXPECT_STREQ(::lite::LiteCounterService::kBumpMethodName, "/lite.LiteCounter/Bump");
}

std::string ReadGenerated(const std::string& name) {
  std::ifstream in(absl::StrCat(COURIER_CASES_GEN_DIR, "/", name));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Leading comments on services and methods are copied into the generated header.
TEST(GeneratedHeaders, CopyLeadingComments) {
  const std::string deep = ReadGenerated("deep.courier.h");
  ASSERT_FALSE(deep.empty());
  EXPECT_THAT(deep, HasSubstr("// Arithmetic five packages down.\n"));
  EXPECT_THAT(deep, HasSubstr("// Adds the values of every item.\n"));
  EXPECT_THAT(deep, HasSubstr("// Not overridden by the test server: answers UNIMPLEMENTED.\n"));
  const std::string wkt = ReadGenerated("wkt.courier.h");
  EXPECT_THAT(wkt, HasSubstr("// Any on both sides: unpacks a Timestamp, adds one second and "
                             "packs it again;\n"));
  EXPECT_THAT(wkt, HasSubstr("// INVALID_ARGUMENT when the Any holds anything else.\n"));
  EXPECT_THAT(ReadGenerated("nopkg.courier.h"),
              HasSubstr("// A service in a file without a package.\n"));
}

}  // namespace
}  // namespace courier
