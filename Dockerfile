# One image for the operator, the node agent and the slice runtime.
# Build: docker build -t ghcr.io/edgeweave/edgeweave:0.1.0 .

# --- eBPF object: compiled once here, so the agent image needs no compiler -----------------------
FROM debian:bookworm-slim AS bpf
RUN apt-get update && apt-get install -y --no-install-recommends clang llvm libbpf-dev linux-libc-dev make bpftool \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY operator/edgeweave/agent/bpf/ bpf/
# hint.bpf.c needs kernel types: vmlinux.h from the build host's BTF (CO-RE relocates the field
# offsets to the node's kernel at load). Without BTF here the hint object is left out and the
# agent runs without the send hint (it says so in its status).
RUN mkdir -p btf && (bpftool btf dump file /sys/kernel/btf/vmlinux format c > btf/vmlinux.h || rm -f btf/vmlinux.h); \
    for f in bpf/*.bpf.c; do \
      case "$f" in *hint.bpf.c) [ -s btf/vmlinux.h ] || continue;; esac; \
      clang -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu -Ibpf -Ibtf \
        -c "$f" -o "${f%.c}.o"; \
    done

# --- Python wheel ------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps -w /wheels .

# --- runtime ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 bpftool \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --from=bpf /src/bpf/*.bpf.o /usr/local/lib/edgeweave/bpf/
ENV EDGEWEAVE_BPF_OUT=/usr/local/lib/edgeweave/bpf
# A name for the uid: kopf's peering identity (getpass.getuser) fails for a uid without a passwd entry.
RUN groupadd -g 65532 edgeweave && useradd -u 65532 -g 65532 -M -d /nonexistent -s /usr/sbin/nologin edgeweave
USER 65532:65532
ENTRYPOINT ["edgeweave"]
CMD ["operator"]
