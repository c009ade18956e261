// The `courier` tool's pure parts: the schema from .proto files (method names in every accepted
// form, NOT_FOUND messages, descriptions) and the repeatable flag type.
#include "tools/cli/schema.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/cli/flags.h"

namespace courier::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::unique_ptr<Schema> EchoSchema() {
  absl::StatusOr<std::unique_ptr<Schema>> schema =
      NewProtoFileSchema({"examples/echo.proto"}, {COURIER_SOURCE_DIR "/proto"});
  EXPECT_TRUE(schema.ok()) << schema.status();
  return schema.ok() ? *std::move(schema) : nullptr;
}

TEST(ProtoFileSchema, ListsTheServicesOfTheFiles) {
  std::unique_ptr<Schema> schema = EchoSchema();
  ASSERT_NE(schema, nullptr);
  absl::StatusOr<std::vector<std::string>> services = schema->ListServices();
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_EQ(*services, std::vector<std::string>{"courier.examples.Echo"});
}

TEST(ProtoFileSchema, FindsAMethodInEveryForm) {
  std::unique_ptr<Schema> schema = EchoSchema();
  ASSERT_NE(schema, nullptr);
  for (const char* name :
       {"courier.examples.Echo/Say", "/courier.examples.Echo/Say", "courier.examples.Echo.Say"}) {
    absl::StatusOr<const google::protobuf::MethodDescriptor*> method = schema->FindMethod(name);
    ASSERT_TRUE(method.ok()) << name << ": " << method.status();
    EXPECT_EQ((*method)->full_name(), "courier.examples.Echo.Say") << name;
  }
}

TEST(ProtoFileSchema, UnknownNamesAreNotFoundNamingThem) {
  std::unique_ptr<Schema> schema = EchoSchema();
  ASSERT_NE(schema, nullptr);
  absl::StatusOr<const google::protobuf::MethodDescriptor*> method =
      schema->FindMethod("courier.examples.Echo/Shout");
  EXPECT_EQ(method.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(method.status().message()),
            "method 'Shout' not found in service 'courier.examples.Echo'");
  method = schema->FindMethod("courier.examples.Nope.Say");
  EXPECT_EQ(method.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(method.status().message()),
            "service 'courier.examples.Nope' not found in the --proto files");
  method = schema->FindMethod("Say");
  EXPECT_EQ(method.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> text = schema->Describe("courier.examples.Nothing");
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("'courier.examples.Nothing'"));
}

TEST(ProtoFileSchema, DescribesServicesMethodsMessagesAndFields) {
  std::unique_ptr<Schema> schema = EchoSchema();
  ASSERT_NE(schema, nullptr);
  EXPECT_EQ(schema->Describe("courier.examples.EchoReply").value_or(""),
            "message EchoReply {\n  string text = 1;\n}\n");
  EXPECT_EQ(schema->Describe("courier.examples.Echo/Say").value_or(""),
            "rpc Say(.courier.examples.EchoRequest) returns (.courier.examples.EchoReply);\n");
  EXPECT_THAT(schema->Describe(".courier.examples.Echo").value_or(""),
              StartsWith("service Echo {"));
  EXPECT_EQ(schema->Describe("courier.examples.EchoRequest.text").value_or(""),
            "string text = 1;\n");
}

TEST(ProtoFileSchema, MissingAndBrokenFilesSayWhich) {
  absl::StatusOr<std::unique_ptr<Schema>> schema =
      NewProtoFileSchema({"examples/none.proto"}, {COURIER_SOURCE_DIR "/proto"});
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(schema.status().message()), StartsWith("--proto examples/none.proto: "));
  // A disk path outside every import path.
  schema = NewProtoFileSchema({COURIER_SOURCE_DIR "/proto/examples/echo.proto"},
                              {COURIER_SOURCE_DIR "/tools"});
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(schema.status().message()), HasSubstr("is not under any -I import path"));
  // A file that does not compile: where, and protobuf's reason.
  const std::string dir = ::testing::TempDir();
  std::FILE* broken = std::fopen((dir + "/cli_broken.proto").c_str(), "w");
  ASSERT_NE(broken, nullptr);
  std::fputs("syntax = \"proto3\";\nmessage Broken {\n  strin text = 1;\n}\n", broken);
  std::fclose(broken);
  schema = NewProtoFileSchema({"cli_broken.proto"}, {dir});
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(schema.status().message()),
              StartsWith("--proto cli_broken.proto does not compile: cli_broken.proto:3:3: "));
  EXPECT_THAT(std::string(schema.status().message()), HasSubstr("strin"));
}

TEST(RepeatedFlag, EveryOccurrenceAddsToTheList) {
  ProtoList flag;
  std::string error;
  ASSERT_TRUE(AbslParseFlag("a.proto,b.proto", &flag, &error));
  ASSERT_TRUE(AbslParseFlag("c.proto", &flag, &error));
  EXPECT_EQ(flag.items, (std::vector<std::string>{"a.proto", "b.proto", "c.proto"}));
  EXPECT_EQ(AbslUnparseFlag(flag), "a.proto,b.proto,c.proto");
  // "" (absl's self-check of the default) adds nothing.
  ASSERT_TRUE(AbslParseFlag("", &flag, &error));
  EXPECT_EQ(flag.items.size(), 3u);
}

TEST(RepeatedFlag, HeadersAreNormalisedAndChecked) {
  HeaderList flag;
  std::string error;
  ASSERT_TRUE(AbslParseFlag("X-User:  ann ", &flag, &error)) << error;
  ASSERT_TRUE(AbslParseFlag("trace:a,b", &flag, &error)) << error;  // a comma is data here
  EXPECT_EQ(flag.items, (std::vector<std::string>{"x-user:ann", "trace:a,b"}));
  EXPECT_FALSE(AbslParseFlag("no-colon", &flag, &error));
  EXPECT_EQ(error, "expected KEY:VALUE");
  EXPECT_FALSE(AbslParseFlag(":value", &flag, &error));
  EXPECT_FALSE(AbslParseFlag("bad key:v", &flag, &error));
  EXPECT_THAT(error, HasSubstr("'bad key'"));
}

}  // namespace
}  // namespace courier::cli
