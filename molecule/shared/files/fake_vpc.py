"""A stand-in for the VPC resolver inside a test container: answers every A query with
192.0.2.10 on 169.254.169.253:53, or the address given as the first argument (an address on
the container's own loopback). Standard library only: it runs before the agent is installed."""
import socket
import struct
import sys

ADDRESS = sys.argv[1] if len(sys.argv) > 1 else "169.254.169.253"
ANSWER = bytes([192, 0, 2, 10])

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((ADDRESS, 53))
while True:
    data, peer = sock.recvfrom(4096)
    if len(data) < 12:
        continue
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    end = 12
    while end < len(data) and data[end] != 0:
        end += data[end] + 1
    question = data[12:end + 5]
    if qdcount != 1 or len(question) < 5:
        continue
    qtype = struct.unpack("!H", question[-4:-2])[0]
    answers = b""
    if qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ANSWER
    rd = flags & 0x0100
    header = struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 1 if answers else 0, 0, 0)
    sock.sendto(header + question + answers, peer)
