#include "common/config/server_list.hpp"

#include <nlohmann/json.hpp>

#include "common/config/units.hpp"

namespace proxyd::config {

namespace {

using nlohmann::json;

json encode_server(const UpstreamServer& s) {
    return {{"id", s.id},
            {"address", s.address.text},
            {"hostname", s.hostname},
            {"port", s.port},
            {"weight", s.weight},
            {"max_connections", s.max_connections},
            {"backup", s.backup},
            {"drain", s.drain},
            {"tls", s.tls},
            {"sni", s.sni},
            {"verify", s.verify},
            {"ca_file", s.ca_file},
            {"ca_pem", s.ca_pem},
            {"state_index", s.state_index}};
}

bool decode_server(const json& in, UpstreamServer& out, std::string& error) {
    out.id = in.at("id").get<std::string>();
    if (!parse_socket_address(in.at("address").get<std::string>(), out.address, error)) {
        return false;
    }
    out.hostname = in.at("hostname").get<std::string>();
    out.port = in.at("port").get<std::uint16_t>();
    out.weight = in.at("weight").get<int>();
    out.max_connections = in.at("max_connections").get<int>();
    out.backup = in.at("backup").get<bool>();
    out.drain = in.at("drain").get<bool>();
    out.tls = in.at("tls").get<bool>();
    out.sni = in.at("sni").get<std::string>();
    out.verify = in.at("verify").get<bool>();
    out.ca_file = in.at("ca_file").get<std::string>();
    out.ca_pem = in.at("ca_pem").get<std::string>();
    out.state_index = in.at("state_index").get<std::uint32_t>();
    return true;
}

}  // namespace

std::string encode_server_list(const ServerList& list) {
    json servers = json::array();
    for (const auto& server : list.servers) servers.push_back(encode_server(server));
    return json{{"upstream", list.upstream}, {"servers", servers}}.dump();
}

std::optional<ServerList> decode_server_list(std::string_view text, std::string& error) {
    json in = json::parse(text, nullptr, false);
    if (in.is_discarded() || !in.is_object()) {
        error = "server list: not a JSON object";
        return std::nullopt;
    }
    try {
        ServerList list;
        list.upstream = in.at("upstream").get<std::size_t>();
        for (const auto& entry : in.at("servers")) {
            UpstreamServer server;
            if (!decode_server(entry, server, error)) return std::nullopt;
            list.servers.push_back(std::move(server));
        }
        return list;
    } catch (const json::exception& e) {
        error = std::string("server list: ") + e.what();
        return std::nullopt;
    }
}

}  // namespace proxyd::config
