// Server reflection (services/reflection.h) and health checking (services/health.h) over every
// transport in the registry: what a client learns from them, their errors, and health through
// a server's shutdown.
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "asio/co_spawn.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/use_future.hpp"
#include "courier/reflection/v1/reflection.courier.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.courier.h"
#include "gtest/gtest.h"
#include "inventory.courier.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "services/health.h"
#include "services/reflection.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"

namespace courier {
namespace {

namespace pb = google::protobuf;
namespace refl = courier::reflection::v1;
using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using grpc::health::v1::HealthStub;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class Inventory final : public courier::test::inventory::InventoryService {};

// A server on its own reactor thread, with reflection and health; clients are blocking stubs on
// channels with their own reactors.
class ServicesTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Server>(io_.get_executor());
    ASSERT_THAT(server_->AddService(inventory_), IsOk());
    generic_.AddRawMethod(
        "/hand.Made/Do",
        [](ServerContext&, std::string_view) -> asio::awaitable<absl::StatusOr<std::string>> {
          co_return std::string();
        });
    ASSERT_THAT(server_->AddService(generic_), IsOk());
    ASSERT_THAT(EnableReflection(*server_), IsOk());
    absl::StatusOr<std::shared_ptr<Health>> health = EnableHealth(*server_);
    ASSERT_THAT(health, IsOk());
    health_ = *health;
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = endpoint->ToString();
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    channels_.clear();
    // The server belongs to its reactor's thread: destroy it there.
    asio::post(io_, asio::use_future([this] { server_.reset(); })).get();
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::shared_ptr<Channel> NewChannel() {
    absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(endpoint_);
    EXPECT_THAT(channel, IsOk());
    channels_.push_back(*channel);
    return *channel;
  }

  // One reflection request on a fresh stream.
  refl::ServerReflectionResponse Ask(refl::ServerReflectionRequest request) {
    refl::ServerReflectionStub stub(NewChannel());
    auto stream = stub.BlockingServerReflectionInfo();
    EXPECT_THAT(stream.Write(request), IsOk());
    std::optional<refl::ServerReflectionResponse> response = stream.Read();
    EXPECT_THAT(stream.WritesDone(), IsOk());
    EXPECT_FALSE(stream.Read().has_value());
    EXPECT_THAT(stream.Finish(), IsOk());
    EXPECT_TRUE(response.has_value());
    return response.value_or(refl::ServerReflectionResponse());
  }

  static refl::ServerReflectionRequest Symbol(std::string symbol) {
    refl::ServerReflectionRequest request;
    request.set_file_containing_symbol(std::move(symbol));
    return request;
  }

  // The files of a FileDescriptorResponse, in order.
  static std::vector<pb::FileDescriptorProto> Files(const refl::ServerReflectionResponse& r) {
    std::vector<pb::FileDescriptorProto> files;
    for (const std::string& bytes : r.file_descriptor_response().file_descriptor_proto()) {
      files.emplace_back();
      EXPECT_TRUE(files.back().ParseFromString(bytes));
    }
    return files;
  }

  absl::StatusOr<HealthCheckResponse> Check(std::string service) {
    HealthCheckRequest request;
    request.set_service(std::move(service));
    return HealthStub(NewChannel()).BlockingCheck(request);
  }

  Inventory inventory_;     // outlives the server
  GenericService generic_;  // a service without a descriptor
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::unique_ptr<Server> server_;
  std::shared_ptr<Health> health_;
  std::string endpoint_;
  std::thread thread_;
  std::vector<std::shared_ptr<Channel>> channels_;
};

TEST_P(ServicesTest, ListServicesNamesEveryServiceServed) {
  refl::ServerReflectionRequest request;
  request.set_list_services("");
  refl::ServerReflectionResponse response = Ask(request);
  std::vector<std::string> names;
  for (const refl::ServiceResponse& s : response.list_services_response().service()) {
    names.push_back(s.name());
  }
  EXPECT_THAT(
      names, ElementsAre("courier.reflection.v1.ServerReflection",
                         "courier.test.inventory.Inventory", "grpc.health.v1.Health", "hand.Made"));
  EXPECT_EQ(response.original_request().message_request_case(),
            refl::ServerReflectionRequest::kListServices);
}

TEST_P(ServicesTest, ASymbolComesWithTheFilesItsFileImports) {
  for (const char* symbol :
       {"courier.test.inventory.Inventory", "courier.test.inventory.Inventory.Changes",
        "courier.test.inventory.Item", "courier.test.inventory.Item.updated"}) {
    SCOPED_TRACE(symbol);
    std::vector<pb::FileDescriptorProto> files = Files(Ask(Symbol(symbol)));
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0].name(), "inventory.proto");
    EXPECT_EQ(files[1].name(), "google/protobuf/timestamp.proto");
    // The answer is complete: a pool built from it alone resolves the service's types.
    pb::DescriptorPool pool;
    ASSERT_NE(pool.BuildFile(files[1]), nullptr);
    ASSERT_NE(pool.BuildFile(files[0]), nullptr);
    const pb::ServiceDescriptor* service =
        pool.FindServiceByName("courier.test.inventory.Inventory");
    ASSERT_NE(service, nullptr);
    const pb::MethodDescriptor* changes = service->FindMethodByName("Changes");
    ASSERT_NE(changes, nullptr);
    EXPECT_TRUE(changes->server_streaming());
    EXPECT_FALSE(changes->client_streaming());
    EXPECT_EQ(changes->output_type()->FindFieldByName("updated")->message_type()->full_name(),
              "google.protobuf.Timestamp");
  }
}

TEST_P(ServicesTest, AFileByNameComesWithItsDependencies) {
  refl::ServerReflectionRequest request;
  request.set_file_by_filename("inventory.proto");
  std::vector<pb::FileDescriptorProto> files = Files(Ask(request));
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].name(), "inventory.proto");
  EXPECT_EQ(files[0].service(0).name(), "Inventory");
}

TEST_P(ServicesTest, UnknownSymbolsAndFilesAreNotFoundAndTheStreamGoesOn) {
  refl::ServerReflectionStub stub(NewChannel());
  auto stream = stub.BlockingServerReflectionInfo();
  refl::ServerReflectionRequest by_file;
  by_file.set_file_by_filename("no/such.proto");
  refl::ServerReflectionRequest nothing;  // no question set
  for (const refl::ServerReflectionRequest& request :
       {Symbol("courier.test.inventory.Nope"), Symbol("hand.Made"), by_file, nothing,
        Symbol("courier.test.inventory.Inventory")}) {
    ASSERT_THAT(stream.Write(request), IsOk());
    std::optional<refl::ServerReflectionResponse> response = stream.Read();
    ASSERT_TRUE(response.has_value());
    EXPECT_EQ(response->original_request().SerializeAsString(), request.SerializeAsString());
    if (request.message_request_case() == refl::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET) {
      EXPECT_EQ(response->error_response().error_code(),
                static_cast<int>(absl::StatusCode::kInvalidArgument));
    } else if (request.file_containing_symbol() == "courier.test.inventory.Inventory") {
      EXPECT_EQ(response->file_descriptor_response().file_descriptor_proto_size(), 2);
    } else {
      EXPECT_EQ(response->error_response().error_code(),
                static_cast<int>(absl::StatusCode::kNotFound));
      EXPECT_THAT(response->error_response().error_message(),
                  HasSubstr(request.has_file_by_filename() ? "no/such.proto"
                                                           : request.file_containing_symbol()));
    }
  }
  ASSERT_THAT(stream.WritesDone(), IsOk());
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_THAT(stream.Finish(), IsOk());
}

TEST_P(ServicesTest, HealthChecksTheServerAndEachServiceItServes) {
  for (const char* service :
       {"", "courier.test.inventory.Inventory", "grpc.health.v1.Health", "hand.Made"}) {
    absl::StatusOr<HealthCheckResponse> response = Check(service);
    ASSERT_THAT(response, IsOk()) << service;
    EXPECT_EQ(response->status(), HealthCheckResponse::SERVING) << service;
  }
  EXPECT_THAT(Check("no.such.Service"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no.such.Service")));
}

TEST_P(ServicesTest, StatusesSetByTheApplicationAreWhatCheckAnswers) {
  health_->SetServingStatus("courier.test.inventory.Inventory", false);
  EXPECT_EQ(Check("courier.test.inventory.Inventory")->status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check("")->status(), HealthCheckResponse::SERVING);
  // A service with no status of its own follows the server's.
  health_->SetServingStatus("", false);
  EXPECT_EQ(Check("grpc.health.v1.Health")->status(), HealthCheckResponse::NOT_SERVING);
  // A name the application sets is known from then on, served or not.
  health_->SetServingStatus("batch.Jobs", true);
  EXPECT_EQ(Check("batch.Jobs")->status(), HealthCheckResponse::SERVING);
}

TEST_P(ServicesTest, WatchSendsTheStatusThenEachChange) {
  HealthCheckRequest request;
  request.set_service("courier.test.inventory.Inventory");
  auto watch = HealthStub(NewChannel()).BlockingWatch(request);
  std::optional<HealthCheckResponse> first = watch.Read();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status(), HealthCheckResponse::SERVING);
  health_->SetServingStatus("courier.test.inventory.Inventory", false);
  std::optional<HealthCheckResponse> second = watch.Read();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status(), HealthCheckResponse::NOT_SERVING);
  // Setting the same status again is no change.
  health_->SetServingStatus("courier.test.inventory.Inventory", false);
  health_->SetServingStatus("courier.test.inventory.Inventory", true);
  std::optional<HealthCheckResponse> third = watch.Read();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->status(), HealthCheckResponse::SERVING);
  watch.Cancel();
  EXPECT_THAT(watch.Finish(), StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ServicesTest, WatchOfAnUnknownServiceWaitsForItToBeSet) {
  HealthCheckRequest request;
  request.set_service("later.Service");
  auto watch = HealthStub(NewChannel()).BlockingWatch(request);
  std::optional<HealthCheckResponse> first = watch.Read();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_->SetServingStatus("later.Service", true);
  std::optional<HealthCheckResponse> second = watch.Read();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status(), HealthCheckResponse::SERVING);
  watch.Cancel();
  (void)watch.Finish();
}

TEST_P(ServicesTest, ShutdownTurnsWatchersNotServingAndEndsThemWithoutWaitingForTheDrain) {
  HealthCheckRequest request;
  auto watch = HealthStub(NewChannel()).BlockingWatch(request);
  std::optional<HealthCheckResponse> first = watch.Read();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status(), HealthCheckResponse::SERVING);
  const auto start = std::chrono::steady_clock::now();
  std::future<void> shut =
      asio::co_spawn(io_, server_->Shutdown(std::chrono::seconds(30)), asio::use_future);
  std::optional<HealthCheckResponse> last = watch.Read();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(watch.Read().has_value());
  EXPECT_THAT(watch.Finish(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  ASSERT_EQ(shut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(health_->Status(""), HealthCheckResponse::NOT_SERVING);
  // For good: the application cannot turn it back on.
  health_->SetServingStatus("", true);
  EXPECT_EQ(health_->Status(""), HealthCheckResponse::NOT_SERVING);
}

TEST_P(ServicesTest, ACancelledWatchEndsItsHandler) {
  HealthCheckRequest request;
  auto watch = HealthStub(NewChannel()).BlockingWatch(request);
  ASSERT_TRUE(watch.Read().has_value());
  watch.Cancel();
  EXPECT_THAT(watch.Finish(), StatusIs(absl::StatusCode::kCancelled));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server_->active_calls() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server_->active_calls(), 0u);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, ServicesTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

// Not per transport: what EnableReflection and EnableHealth refuse.
TEST(ServicesSetupTest, EnablingTwiceIsAlreadyExists) {
  asio::io_context io;
  Server server(io.get_executor());
  ASSERT_THAT(EnableReflection(server), IsOk());
  EXPECT_THAT(EnableReflection(server), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_THAT(EnableHealth(server), IsOk());
  EXPECT_THAT(EnableHealth(server).status(), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(EnableReflection(server, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace courier
