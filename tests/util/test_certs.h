// Certificates for TLS tests, made with the openssl command line (Debian's
// openssl package, installed by scripts/bootstrap): a CA, a server
// certificate for localhost / 127.0.0.1 signed by it, a client certificate
// signed by it, a daemon's certificate (server and client, for the daemons'
// mutual-TLS control channel) signed by it, a second CA, and a daemon's
// certificate signed by that second CA (a stranger).
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace cistern::testing_tls {

struct TestCerts {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, other_ca;
  std::string peer_cert, peer_key;          // ca's: serverAuth and clientAuth, 127.0.0.1
  std::string stranger_cert, stranger_key;  // the same, signed by other_ca
  bool ok = false;
  std::string error;

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

// Writes the files under `dir` (created) and returns their paths; ok is
// false (error says which step) when openssl fails.
inline TestCerts MakeTestCerts(const std::string& dir) {
  TestCerts c;
  c.dir = dir;
  std::filesystem::create_directories(dir);
  c.ca = dir + "/ca.pem";
  c.server_cert = dir + "/server.pem";
  c.server_key = dir + "/server.key";
  c.client_cert = dir + "/client.pem";
  c.client_key = dir + "/client.key";
  c.other_ca = dir + "/other-ca.pem";
  c.peer_cert = dir + "/peer.pem";
  c.peer_key = dir + "/peer.key";
  c.stranger_cert = dir + "/stranger.pem";
  c.stranger_key = dir + "/stranger.key";
  std::ofstream(dir + "/server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                        "extendedKeyUsage=serverAuth\n";
  std::ofstream(dir + "/client.ext") << "extendedKeyUsage=clientAuth\n";
  std::ofstream(dir + "/peer.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n";
  const std::string q = " >>" + dir + "/openssl.log 2>&1";
  const std::string steps[] = {
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=cistern-test-ca -keyout " + dir +
          "/ca.key -out " + c.ca,
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout " + dir +
          "/other-ca.key -out " + c.other_ca,
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout " + c.server_key + " -out " +
          dir + "/server.csr",
      "openssl x509 -req -days 2 -in " + dir + "/server.csr -CA " + c.ca + " -CAkey " + dir +
          "/ca.key -CAcreateserial -extfile " + dir + "/server.ext -out " + c.server_cert,
      "openssl req -newkey rsa:2048 -nodes -subj /CN=cistern-test-client -keyout " + c.client_key +
          " -out " + dir + "/client.csr",
      "openssl x509 -req -days 2 -in " + dir + "/client.csr -CA " + c.ca + " -CAkey " + dir +
          "/ca.key -CAcreateserial -extfile " + dir + "/client.ext -out " + c.client_cert,
      "openssl req -newkey rsa:2048 -nodes -subj /CN=cistern-test-daemon -keyout " + c.peer_key +
          " -out " + dir + "/peer.csr",
      "openssl x509 -req -days 2 -in " + dir + "/peer.csr -CA " + c.ca + " -CAkey " + dir +
          "/ca.key -CAcreateserial -extfile " + dir + "/peer.ext -out " + c.peer_cert,
      "openssl req -newkey rsa:2048 -nodes -subj /CN=cistern-test-stranger -keyout " +
          c.stranger_key + " -out " + dir + "/stranger.csr",
      "openssl x509 -req -days 2 -in " + dir + "/stranger.csr -CA " + c.other_ca + " -CAkey " +
          dir + "/other-ca.key -CAcreateserial -extfile " + dir + "/peer.ext -out " +
          c.stranger_cert,
  };
  for (const std::string& step : steps) {
    if (std::system((step + q).c_str()) != 0) {
      c.error = "failed: " + step + "\n" + TestCerts::Read(dir + "/openssl.log");
      return c;
    }
  }
  c.ok = true;
  return c;
}

// MakeTestCerts in a fresh directory under /tmp, removed with it.
struct TempTestCerts : TestCerts {
  TempTestCerts() {
    char tmpl[] = "/tmp/cistern-certs-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    if (made == nullptr) {
      error = "mkdtemp failed";
      return;
    }
    static_cast<TestCerts&>(*this) = MakeTestCerts(made);
  }
  ~TempTestCerts() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  TempTestCerts(const TempTestCerts&) = delete;
  TempTestCerts& operator=(const TempTestCerts&) = delete;
};

}  // namespace cistern::testing_tls
