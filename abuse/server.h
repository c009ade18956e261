// The two processes courier-abuse runs besides itself: the server under test and a one-call
// client (what a short-lived command-line tool does). Both are this same binary.
#pragma once

#include <string>

namespace courier::abuse {

// `courier-abuse --serve URI`: a courier::Server (default options) with a GenericService of
// /courier.abuse.Abuse/Echo (the request bytes back) and /courier.abuse.Abuse/Sleep (waits the
// number of milliseconds in the request, decimal text, on a timer the call's cancellation
// wakes) and /courier.abuse.Abuse/Stats ("active_calls=N connections=M": Server's own counts,
// this call and its connection included). Prints "listening on URI"; on SIGTERM or SIGINT shuts
// down (5 s drain), prints "shut down" and returns. Returns the process exit code.
int ServeMain(const std::string& uri);

// `courier-abuse --one-call URI [--timeout-ms MS] [--blocking]`: one Echo call, printing "OK" or
// "CODE: message", then returning from main; what a short-lived command-line tool does. By
// default the way examples/echo/client_coro.cc does it: a Channel on an io_context that main()
// runs until it has no work left. With `blocking`, through a Channel that runs its own reactor
// (Channel::Create(uri)), waiting on a future. Exit code 0 on OK, 1 otherwise.
int OneCallMain(const std::string& uri, long timeout_ms, bool blocking);

}  // namespace courier::abuse
