# Build: docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t resendq .
# Run:   docker compose up   (see docker-compose.yml)

FROM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies first so this layer is cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/resendq ./cmd/resendq

FROM debian:12-slim
# CA roots for HTTPS calls to the upstream API (the binary is static, no apt needed).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY --from=build /out/resendq /resendq
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/resendq"]
CMD ["worker"]
