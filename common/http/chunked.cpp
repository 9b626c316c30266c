// Chunked framing (RFC 9112 §7.1), one byte at a time so any split of the input works the same.
//
// Framing bytes are few (a size line per chunk), so the byte-wise state machine costs nothing
// next to the data, which the caller moves in bulk without it passing through here.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/http/parser.hpp"
#include "common/http/tokens_internal.hpp"

namespace proxyd::http {

namespace {

// 16 hex digits fill 64 bits; a 17th could only overflow (or be a padded size, which nobody
// legitimate sends and which parsers disagree about).
constexpr int kMaxSizeDigits = 16;
// Sizes are capped like Content-Length at 2^63 - 1: an upstream or library that reads the size
// into a signed 64-bit integer would see a negative number, and callers may add a size to a
// byte count without overflowing.
constexpr std::uint64_t kMaxChunkSize = std::numeric_limits<std::int64_t>::max();

bool is_qdtext(char c) {
    return detail::is_field_char(c) && c != '"' && c != '\\';
}

}  // namespace

void ChunkedDecoder::consume_data(std::uint64_t n) {
    if (state_ != State::Data) return;
    remaining_ -= std::min(n, remaining_);
    if (remaining_ == 0) state_ = State::DataCR;
}

ChunkedDecoder::Result ChunkedDecoder::parse_framing(const char* data, std::size_t len) {
    std::size_t i = 0;
    while (i < len && state_ != State::Data && state_ != State::Done) {
        if (state_ == State::Error || !step(data[i])) {
            state_ = State::Error;
            return {i, true};
        }
        ++i;
    }
    return {i, state_ == State::Error};
}

bool ChunkedDecoder::step(char c) {
    // Limits first, so a peer cannot keep us in one line or in the trailers forever.
    if ((state_ == State::Size || state_ == State::Extension || state_ == State::Trailer) &&
        ++line_length_ > kMaxLineLength)
        return false;
    if (state_ >= State::TrailerStart && state_ <= State::FinalLF &&
        ++trailer_bytes_ > kMaxTrailerBytes)
        return false;

    switch (state_) {
        case State::Size:
            return step_size(c);
        case State::Extension:
            return step_extension(c);
        case State::SizeLF:
            return step_size_lf(c);
        case State::DataCR:
            state_ = State::DataLF;
            return c == '\r';
        case State::DataLF:
            *this = ChunkedDecoder{};  // the next size line starts from a clean slate
            return c == '\n';
        case State::TrailerStart:
            return step_trailer_start(c);
        case State::Trailer:
            return step_trailer(c);
        case State::TrailerLF:
            state_ = State::TrailerStart;
            return c == '\n';
        case State::FinalLF:
            state_ = State::Done;
            return c == '\n';
        case State::Data:
        case State::Done:
        case State::Error:
            break;
    }
    return false;
}

bool ChunkedDecoder::step_size(char c) {
    if (detail::is_hex_digit(c)) {
        if (size_digits_ == kMaxSizeDigits || chunk_size_ > kMaxChunkSize >> 4) return false;
        chunk_size_ = chunk_size_ << 4 | detail::hex_value(c);
        ++size_digits_;
        return true;
    }
    if (size_digits_ == 0) return false;
    if (c == '\r') return end_size_line();
    state_ = State::Extension;
    if (c == ';') {
        ext_ = Ext::NameStart;
        return true;
    }
    ext_ = Ext::BeforeSemi;
    return detail::is_ows(c);
}

// Extensions are skipped, but only after checking their grammar: a lenient skip ("anything up to
// CR") is exactly where front ends and back ends have disagreed about where a chunk starts.
bool ChunkedDecoder::step_extension(char c) {
    const bool ows = detail::is_ows(c);
    switch (ext_) {
        case Ext::BeforeSemi:
            if (c == ';') ext_ = Ext::NameStart;
            return ows || c == ';';
        case Ext::NameStart:
            if (detail::is_tchar(c)) ext_ = Ext::Name;
            return ows || detail::is_tchar(c);
        case Ext::Name:
        case Ext::AfterName:
            if (c == '\r' && ext_ == Ext::Name) return end_size_line();
            if (c == '=')
                ext_ = Ext::ValueStart;
            else if (c == ';')
                ext_ = Ext::NameStart;
            else if (ows)
                ext_ = Ext::AfterName;
            else
                return ext_ == Ext::Name && detail::is_tchar(c);
            return true;
        case Ext::ValueStart:
            if (c == '"')
                ext_ = Ext::Quoted;
            else if (detail::is_tchar(c))
                ext_ = Ext::Token;
            return ows || c == '"' || detail::is_tchar(c);
        case Ext::Token:
        case Ext::AfterQuoted:
            if (c == '\r') return end_size_line();
            if (c == ';')
                ext_ = Ext::NameStart;
            else if (ows)
                ext_ = Ext::BeforeSemi;
            else
                return ext_ == Ext::Token && detail::is_tchar(c);
            return true;
        case Ext::Quoted:
            if (c == '"')
                ext_ = Ext::AfterQuoted;
            else if (c == '\\')
                ext_ = Ext::QuotedPair;
            return is_qdtext(c) || c == '"' || c == '\\';
        case Ext::QuotedPair:
            ext_ = Ext::Quoted;
            return detail::is_field_char(c);
    }
    return false;
}

bool ChunkedDecoder::end_size_line() {
    state_ = State::SizeLF;
    return true;
}

bool ChunkedDecoder::step_size_lf(char c) {
    if (c != '\n') return false;
    if (chunk_size_ == 0) {
        state_ = State::TrailerStart;
    } else {
        state_ = State::Data;
        remaining_ = chunk_size_;
    }
    return true;
}

// Trailer fields follow the header rules: no obs-fold, no whitespace before the colon.
bool ChunkedDecoder::step_trailer_start(char c) {
    if (c == '\r') {
        state_ = State::FinalLF;
        return true;
    }
    state_ = State::Trailer;
    trailer_in_value_ = false;
    line_length_ = 1;
    return detail::is_tchar(c);
}

bool ChunkedDecoder::step_trailer(char c) {
    if (!trailer_in_value_) {
        // An empty name cannot happen here: the line started with a tchar.
        if (c == ':') trailer_in_value_ = true;
        return c == ':' || detail::is_tchar(c);
    }
    if (c == '\r') {
        state_ = State::TrailerLF;
        return true;
    }
    return detail::is_field_char(c);
}

}  // namespace proxyd::http
