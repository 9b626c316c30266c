// Strict, incremental, zero-copy HTTP/1.x head parsing.
//
// The parsers look at one contiguous buffer holding the start of a connection's input. They never
// copy: every std::string_view in the result points into that buffer and is valid only while the
// buffer is unchanged (the caller parses, uses the views, then drains the head from its input).
// A call either finds the head incomplete (call again with more bytes), rejects it with the status
// the proxy answers, or reports how many bytes the head took.
//
// Strictness is the point (CONTRACT.md "ambiguous about their length"): anything an upstream could
// frame differently from us is rejected — CL with TE, differing duplicate CL, CL that is not plain
// digits, TE other than a single final "chunked", obs-fold, bare CR or bare LF line ends, space
// before the colon, control bytes in names or values, invalid token characters.
//
// The policy in detail (tests/unit/common/smuggling_test.cpp has a case for each line):
// - Line endings: exactly CRLF everywhere in the head and in chunked framing. A bare LF (which
//   RFC 9112 §2.2 lets a recipient accept) and a bare CR (which it lets a recipient replace with
//   SP) are both rejected with 400: we never guess how an upstream would have split the lines.
// - Content-Length: 1*DIGIT (leading zeros allowed), at most 2^63 - 1. Signs, spaces inside,
//   hex, any other byte and a list ("5, 6", and also "5, 5") are 400. Several Content-Length
//   lines are accepted only when their values are equal numbers (they are one length; the proxy
//   forwards a single Content-Length of its own); differing values are 400.
// - Transfer-Encoding: exactly one field line whose value is "chunked" (any case, OWS around it).
//   Every other value ("xchunked", "chunked, identity", "identity, chunked", "chunked, chunked",
//   "gzip, chunked", empty), a second Transfer-Encoding line, TE together with Content-Length,
//   and TE in an HTTP/1.0 request are 400.
// - "Content_Length" / "Transfer_Encoding" (underscore spellings, which CGI-style gateways read
//   as the framing fields) are 400.
// - Chunk sizes: 1 to 16 hex digits, value at most 2^63 - 1; no sign, no "0x", no whitespace
//   before the size; extensions must follow the chunk-ext grammar; the data must be followed by
//   exactly CRLF. Anything else is 400 (the decoder's error).
// - Field names are tokens; whitespace before the colon, an empty name and obs-fold (a line
//   starting with SP or HTAB) are 400. Field values may hold VCHAR, obs-text, SP and HTAB; NUL,
//   other control bytes and DEL are 400.
// - Host: HTTP/1.1 needs exactly one Host line (none or two, even equal: 400); HTTP/1.0 may omit
//   it. An absolute-form target ("GET http://a.example/x HTTP/1.1") wins over the Host field
//   (RFC 9112 §3.2.2): `host` is the target's authority, and the proxy routes on it and sends it
//   upstream as the only Host (worker/forward_headers.cpp), so routing and upstream agree.
// - Versions: "HTTP/1.0" and "HTTP/1.1" exactly; a well-formed other version is 505, anything
//   else (trailing bytes, lowercase, more digits) 400.
// - Expect: only the value "100-continue" (any case, OWS trimmed) sets expect_continue, and only
//   for HTTP/1.1. Other values are not an error (no 417): the proxy drops the Expect field (it is
//   never forwarded) and handles the request normally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace proxyd::http {

enum class ParseStatus {
    Incomplete,  // need more bytes; nothing is wrong so far
    Done,        // head complete; `head_length` bytes are the head including the final CRLFCRLF
    Error,       // rejected: answer `error_status` (400, 414, 431, 505) and close
};

struct Header {
    std::string_view name;   // as sent (case preserved); compare with iequals
    std::string_view value;  // leading/trailing OWS trimmed
};

inline constexpr std::size_t kMaxHeaders = 100;

enum class BodyKind {
    None,           // no body (no CL/TE on a request; or CL: 0)
    ContentLength,  // exactly `content_length` bytes
    Chunked,        // Transfer-Encoding: chunked
    UntilClose,     // responses only: read until the upstream closes
};

struct RequestLimits {
    std::size_t max_header_size = 16 * 1024;  // whole head, request line included -> 431
    std::size_t max_uri_size = 8 * 1024;      // request target -> 414
};

struct Request {
    std::string_view method;
    std::string_view target;  // as sent (origin-form "/p?q", absolute-form, or "*")
    std::string_view path;    // target without query; for absolute-form just the path part
                              // ("/" in static storage if that part is empty); "*" for OPTIONS *
    std::string_view query;   // without '?'; empty if none
    std::string_view host;    // Host header value, or the authority of an absolute-form target
    int version_minor = 1;    // HTTP/1.<minor>; only 0 and 1 are accepted
    Header headers[kMaxHeaders];
    std::size_t header_count = 0;

    BodyKind body = BodyKind::None;
    std::uint64_t content_length = 0;
    bool keep_alive = true;        // from version + Connection header
    bool expect_continue = false;  // "Expect: 100-continue"
    bool has_upgrade = false;      // an Upgrade header is present (hop-by-hop; stripped for now)
    std::size_t head_length = 0;
    int error_status = 0;
    const char* error_reason = "";  // short, for the JSON error body and the log
};

// Parses the request head at data[0..len). Fills `out` (overwriting it). Returns Error early,
// with error_status 414 or 431, when what is buffered already exceeds the limits even though the
// head is incomplete (more than max_uri_size target bytes without the SP that ends the target:
// 414; more than max_header_size bytes without the end of the head: 431). Up to 4 empty lines
// (CRLF) before the request line are skipped and counted in head_length.
ParseStatus parse_request(const char* data, std::size_t len, const RequestLimits& limits,
                          Request& out);

struct Response {
    int status = 0;
    std::string_view reason;
    int version_minor = 1;
    Header headers[kMaxHeaders];
    std::size_t header_count = 0;
    BodyKind body = BodyKind::UntilClose;
    std::uint64_t content_length = 0;
    bool keep_alive = true;  // upstream's view: false if "Connection: close" or HTTP/1.0 w/o k-a
    std::size_t head_length = 0;
    const char* error_reason = "";
};

// Parses an upstream response head. `request_was_head` makes the body None whatever the headers
// say; 1xx, 204 and 304 have no body either. Errors mean a broken upstream (the proxy answers 502).
ParseStatus parse_response(const char* data, std::size_t len, std::size_t max_head_size,
                           bool request_was_head, Response& out);

// Incremental chunked-body decoder that never copies data: it parses only the framing (sizes,
// extensions, CRLFs, trailers) and tells the caller how many data bytes may be moved as they are.
//
// clang-format off
//   while input not empty:
//     if (dec.in_data()) { n = min(dec.data_remaining(), input); move n bytes; dec.consume_data(n); }
//     else { r = dec.parse_framing(p, len); drain r.consumed; if r.error -> 400; if dec.done() break; }
// clang-format on
class ChunkedDecoder {
  public:
    struct Result {
        std::size_t consumed = 0;  // framing bytes used from the front of the input
        bool error = false;
    };

    void reset() { *this = ChunkedDecoder{}; }
    bool in_data() const { return state_ == State::Data; }
    std::uint64_t data_remaining() const { return remaining_; }
    void consume_data(std::uint64_t n);
    bool done() const { return state_ == State::Done; }
    // The size of the chunk being read now (valid once in_data() turns true for it).
    std::uint64_t chunk_size() const { return chunk_size_; }

    // Consumes framing bytes until data starts, the body ends, more input is needed, or an error.
    Result parse_framing(const char* data, std::size_t len);

    static constexpr std::size_t kMaxLineLength = 4096;  // size line with extensions, trailer line
    static constexpr std::size_t kMaxTrailerBytes = 16 * 1024;

  private:
    enum class State {
        Size,       // hex digits of a chunk size
        Extension,  // BWS and chunk extensions after the size, up to CR (sub-state in ext_)
        SizeLF,     // CR seen after size line
        Data,
        DataCR,  // expecting CR after data
        DataLF,
        TrailerStart,  // start of a trailer line or the final CRLF
        Trailer,       // inside a trailer field line
        TrailerLF,     // CR seen after a trailer line
        FinalLF,       // CR seen on the empty line that ends the body
        Done,
        Error,  // sticky: a rejected body stays rejected
    };
    // Position inside `chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] )`.
    enum class Ext : std::uint8_t {
        BeforeSemi,  // BWS before ';'
        NameStart,   // BWS after ';'
        Name,
        AfterName,   // BWS after the name: '=' or ';' must follow
        ValueStart,  // BWS after '='
        Token,
        Quoted,
        QuotedPair,  // after '\\' inside a quoted-string
        AfterQuoted,
    };

    bool step(char c);  // advances the framing by one byte; false rejects the body
    bool step_size(char c);
    bool step_extension(char c);
    bool step_size_lf(char c);
    bool step_trailer_start(char c);
    bool step_trailer(char c);
    bool end_size_line();

    State state_ = State::Size;
    Ext ext_ = Ext::BeforeSemi;
    bool trailer_in_value_ = false;
    std::uint64_t remaining_ = 0;
    std::uint64_t chunk_size_ = 0;
    int size_digits_ = 0;
    std::size_t line_length_ = 0;
    std::size_t trailer_bytes_ = 0;
};

// ASCII case-insensitive comparison of two strings of length `size`.
bool iequals_same_size(const char* a, const char* b, std::size_t size);
// ASCII case-insensitive comparison, for header names and tokens. Inline: most calls compare a
// header name with a name of another length, and end at the size check.
inline bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && iequals_same_size(a.data(), b.data(), a.size());
}
// The value of the first header named `name` (case-insensitive), or "" if there is none.
std::string_view find_header(const Request& request, std::string_view name);
std::string_view find_header(const Response& response, std::string_view name);
// True if the comma-separated token list `list` contains `token` (case-insensitive).
bool list_contains_token(std::string_view list, std::string_view token);

}  // namespace proxyd::http
