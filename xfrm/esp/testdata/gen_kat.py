#!/usr/bin/env python3
"""Generates kat.json: ESP packets built by an independent path (Python's
hmac/hashlib and OpenSSL through the `cryptography` package) following the
RFC 4303 layout byte by byte, for esp_test.go. Run by hand; not used by CI."""
import hashlib, hmac, json, struct
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def ipv4_icmp(n):
    # A plausible IPv4 echo request of total length n (>= 28).
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, n, 0x1234, 0x4000, 64, 1, 0,
                      bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
    body = bytes([8, 0, 0, 0, 0, 7, 0, 1]) + bytes((i * 7) & 0xff for i in range(n - 28))
    return hdr + body

def pad(n, block):
    p = (block - (n + 2) % block) % block
    return bytes(range(1, p + 1)), p

def cbc(encr_key, integ, integ_key, trunc, spi, seq, iv, nh, payload):
    padding, p = pad(len(payload), 16)
    plain = payload + padding + bytes([p, nh])
    enc = Cipher(algorithms.AES(encr_key), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    head = struct.pack("!II", spi, seq) + iv + ct
    icv = hmac.new(integ_key, head, integ).digest()[: trunc // 8]
    return head + icv

def gcm(key, salt, spi, seq, iv, nh, payload):
    padding, p = pad(len(payload), 4)
    plain = payload + padding + bytes([p, nh])
    aad = struct.pack("!II", spi, seq)
    return aad + iv + AESGCM(key).encrypt(salt + iv, plain, aad)

def k(n, base):
    return bytes((base + i) & 0xff for i in range(n))

vectors = []
integs = [("hmac(sha1)", hashlib.sha1, 20, 96), ("hmac(sha256)", hashlib.sha256, 32, 128),
          ("hmac(sha384)", hashlib.sha384, 48, 192), ("hmac(sha512)", hashlib.sha512, 64, 256)]
for keylen in (16, 32):
    for (name, h, ilen, trunc), plen in zip(integs, (84, 61, 1400, 28)):
        ek, ik, iv = k(keylen, 0x10), k(ilen, 0x80), k(16, 0xa0)
        spi, seq = 0xc0ffee01 + keylen, 0x2a + plen
        payload = ipv4_icmp(plen)
        vectors.append(dict(name=f"aes{keylen*8}-cbc-{name}", encr="cbc(aes)", encrKey=ek.hex(),
                            integ=name, integKey=ik.hex(), truncBits=trunc, spi=spi, seq=seq,
                            iv=iv.hex(), nextHeader=4, payload=payload.hex(),
                            packet=cbc(ek, h, ik, trunc, spi, seq, iv, 4, payload).hex()))
for keylen in (16, 32):
    for plen in (84, 61, 1400):
        ek, salt, iv = k(keylen, 0x30), k(4, 0xca), k(8, 0x01)
        spi, seq = 0xdeadbe00 + keylen, 0x100 + plen
        payload = ipv4_icmp(plen)
        vectors.append(dict(name=f"aes{keylen*8}-gcm16-{plen}", encr="rfc4106(gcm(aes))",
                            encrKey=(ek + salt).hex(), integ="", integKey="", truncBits=128,
                            spi=spi, seq=seq, iv=iv.hex(), nextHeader=4, payload=payload.hex(),
                            packet=gcm(ek, salt, spi, seq, iv, 4, payload).hex()))
print(json.dumps(vectors, indent=1))
