"""A throwaway certificate authority for tests, made with the openssl command line."""

import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*argv, cwd):
    subprocess.run(["openssl", *argv], cwd=cwd, check=True, capture_output=True)


class CertificateAuthority:
    """``CertificateAuthority(dir, "ca1").issue("master")`` -> (cert path, key path) valid for 127.0.0.1 and localhost."""

    def __init__(self, directory, name):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cert = self.directory / f"{name}.pem"
        self.key = self.directory / f"{name}.key"
        _openssl("req", "-x509", *EC_KEY, "-keyout", self.key, "-out", self.cert, "-days", "2",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.directory)

    def issue(self, name):
        key, csr, cert = (self.directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                              "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("req", *EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}", cwd=self.directory)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-out", cert, "-days", "2", "-extfile", extensions, cwd=self.directory)
        return cert, key
