// protoc-gen-courier: protoc's plugin entry point. Everything else is in generator.h.
#include "codegen/generator.h"
#include "google/protobuf/compiler/plugin.h"

int main(int argc, char* argv[]) {
  courier::codegen::Generator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
