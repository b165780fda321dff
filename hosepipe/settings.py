"""Connection settings: everything that differs between a laptop, compose and Kubernetes.

Read once at process start from ``HOSEPIPE_*`` environment variables (and an optional
``.env`` file) and passed down as one object. The pipeline itself lives in ``hosepipe.yaml``
(:mod:`hosepipe.config`); this object only says *where* things are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Connection settings for every hosepipe process (env prefix ``HOSEPIPE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="HOSEPIPE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    config_file: Path = Field(Path("hosepipe.yaml"), description="Path of the pipeline YAML file.")
    data_dir: Path = Field(
        Path(".hosepipe"),
        description="Where the embedded stack keeps its data, logs and pid files.",
    )

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka client options as a JSON object, passed to every producer, "
            'consumer and admin client, e.g. {"security.protocol": "SASL_SSL", '
            '"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p"}.'
        ),
    )
    schema_registry_url: str | None = Field(
        None,
        description=(
            "Confluent-compatible schema registry. When set, Avro is written in the Confluent "
            "wire format; when unset, in Avro single-object encoding."
        ),
    )
    schema_registry_options: dict[str, str] = Field(
        default_factory=dict,
        description='Extra SchemaRegistryClient options, e.g. {"basic.auth.user.info": "u:p"}.',
    )

    # Lake / S3
    lake_url: str = Field(
        "file://.hosepipe/lake",
        description="Where Parquet lands: s3://bucket/prefix or file:///path (file://rel/path).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO/SeaweedFS; unset for AWS."
    )
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region.")

    # PostgreSQL
    database_url: str = Field(
        "postgresql+psycopg://hosepipe:hosepipe@127.0.0.1:5432/hosepipe",
        description="SQLAlchemy URL of the serving database.",
    )

    # Ports and binding
    bind_host: str = Field(
        "127.0.0.1", description="Address HTTP services bind to (0.0.0.0 in containers)."
    )
    ingest_port: int = Field(8080, ge=0, le=65535, description="HTTP ingest port.")
    api_port: int = Field(8000, ge=0, le=65535, description="GraphQL API port.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description=(
            "Port of the /metrics and /healthz endpoint of worker, sink, poll and select "
            "processes; 0 turns it off. HTTP services (ingest, api) serve them on their own port."
        ),
    )

    # Embedded stack ports (hosepipe up)
    broker_port: int = Field(9092, ge=1, le=65535, description="Embedded broker port.")
    s3_port: int = Field(8333, ge=1, le=65535, description="Embedded S3 port.")
    postgres_port: int = Field(5432, ge=1, le=65535, description="Embedded PostgreSQL port.")
    embedded_broker_storage: Literal["s3", "memory"] = Field(
        "s3",
        description=(
            "Embedded broker storage: 's3' keeps topics in the embedded S3 across restarts; "
            "'memory' is faster but loses every topic when the stack stops."
        ),
    )
    embedded_broker_trim_every: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description=(
            "Seconds between trims of the embedded broker's topics in S3 (Tansu enforces no "
            "retention there and lists a partition's every batch on each fetch, so an "
            "untrimmed stack slows down as it runs); 0 turns trimming off."
        ),
    )
    embedded_broker_keep: float = Field(
        60.0,
        ge=0,
        le=30 * 86_400,
        description=(
            "Embedded broker: raw and canonical records written longer ago than this are "
            "trimmed once every consumer group that commits on them has passed them (file-log "
            "announcements after max(this, 1 h)); other topics keep their retention.ms."
        ),
    )

    # Logging
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    log_format: LogFormat = Field("text", description="'text' for people, 'json' for machines.")

    @field_validator("lake_url")
    @classmethod
    def _lake_url_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in {"s3", "file"}:
            raise ValueError(f"must start with s3:// or file://, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_known(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return upper

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one host:port")
        return value

    def s3_client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``boto3.client('s3', ...)`` from these settings."""
        kwargs: dict[str, object] = {"region_name": self.s3_region}
        if self.s3_endpoint_url:
            kwargs["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key_id:
            kwargs["aws_access_key_id"] = self.s3_access_key_id
        if self.s3_secret_access_key:
            kwargs["aws_secret_access_key"] = self.s3_secret_access_key.get_secret_value()
        return kwargs

    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs ``storage_options`` for the lake."""
        options: dict[str, object] = {}
        if self.s3_endpoint_url:
            options["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key_id:
            options["key"] = self.s3_access_key_id
        if self.s3_secret_access_key:
            options["secret"] = self.s3_secret_access_key.get_secret_value()
        options["client_kwargs"] = {"region_name": self.s3_region}
        return options
