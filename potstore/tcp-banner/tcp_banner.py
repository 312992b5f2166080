"""tcp-banner: a light TCP honeypot that sends a banner and catches credentials.

Listens on every port of --ports, sends --banner (backslash escapes such as \\r\\n are
understood), and reports to the HoneyBee node through the HoneyBee Python kit:

* tcp_banner.connect  - a connection arrived (src_ip, src_port, dst_port)
* tcp_banner.data     - the first bytes the peer sent (text, up to 256 bytes)
* tcp_banner.login    - credentials: `USER x` / `PASS y` (FTP, POP3), `LOGIN x y` (IMAP), or
                        the two lines after a `login:` prompt (telnet style, --prompt login)
* tcp_banner.closed   - the connection ended (bytes received, duration)
"""

import argparse
import codecs
import signal
import socket
import sys
import threading
import time

from honeybee import HoneyBeeOutput

READ_LIMIT = 8192
IDLE_TIMEOUT = 30.0

output = HoneyBeeOutput(pot_type="tcp-banner")


def unescape(text):
    return codecs.decode(text.encode("utf-8"), "unicode_escape")


def handle(connection, address, port, banner, telnet_prompt):
    started = time.monotonic()
    src_ip, src_port = address[0], address[1]
    output.send_event("tcp_banner.connect", {"src_ip": src_ip, "src_port": src_port, "dst_port": port})
    received = b""
    username = None
    try:
        connection.settimeout(IDLE_TIMEOUT)
        if banner:
            connection.sendall(banner.encode("utf-8", "replace"))
        if telnet_prompt:
            connection.sendall(b"login: ")
        pending = b""
        while len(received) < READ_LIMIT:
            chunk = connection.recv(1024)
            if not chunk:
                break
            if not received:
                output.send_event(
                    "tcp_banner.data",
                    {"src_ip": src_ip, "dst_port": port, "first_bytes": chunk[:256].decode("utf-8", "replace")},
                )
            received += chunk
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").strip()
                reply, username = credentials(line, username, src_ip, port, telnet_prompt)
                if reply:
                    connection.sendall(reply)
    except OSError:
        pass
    finally:
        connection.close()
        output.send_event(
            "tcp_banner.closed",
            {"src_ip": src_ip, "dst_port": port, "bytes": len(received), "duration": round(time.monotonic() - started, 3)},
        )


def credentials(line, username, src_ip, port, telnet_prompt):
    """Returns the reply to send and the username remembered for the next line."""
    words = line.split(" ")
    verb = words[0].upper() if words else ""
    if telnet_prompt:
        if username is None:
            return b"Password: ", line
        report(src_ip, port, username, line)
        return b"\r\nLogin incorrect\r\nlogin: ", None
    if verb == "USER" and len(words) > 1:
        return b"331 Password required\r\n", " ".join(words[1:])
    if verb == "PASS":
        report(src_ip, port, username, " ".join(words[1:]))
        return b"530 Login incorrect\r\n", None
    if verb.endswith("LOGIN") and len(words) >= 3:
        report(src_ip, port, words[-2], words[-1])
        return b"NO LOGIN failed\r\n", None
    return None, username


def report(src_ip, port, username, password):
    output.send_event(
        "tcp_banner.login",
        {"src_ip": src_ip, "dst_port": port, "username": username or "", "password": password},
    )


def serve(listener, port, banner, telnet_prompt):
    while True:
        connection, address = listener.accept()
        threading.Thread(target=handle, args=(connection, address, port, banner, telnet_prompt), daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description="tcp-banner honeypot")
    parser.add_argument("--ports", required=True, help="comma-separated ports")
    parser.add_argument("--banner", default="")
    parser.add_argument("--prompt", default="", help="'login' for a telnet-style login prompt")
    arguments = parser.parse_args()
    banner = unescape(arguments.banner)
    ports = [int(port) for port in arguments.ports.split(",") if port.strip()]
    listeners = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(128)
        listeners.append((listener, port))

    def stop(signum, frame):
        output.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    output.start()
    print("tcp-banner listening on ports %s" % ",".join(str(p) for _, p in listeners), flush=True)
    for listener, port in listeners:
        threading.Thread(target=serve, args=(listener, port, banner, arguments.prompt == "login"), daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
