"""``settings.kafka_options`` (librdkafka names) reach faust's aiokafka clients."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.faust_credentials import faust_broker_credentials

CA = Path(ssl.get_default_verify_paths().cafile or "")


def aiokafka_auth(options: dict[str, Any]) -> dict[str, Any]:
    """What faust finally hands to aiokafka's clients for ``options``."""
    credentials, _ = faust_broker_credentials(options)
    return dict(credentials_to_aiokafka_auth(credentials))


def test_no_security_options_is_plaintext() -> None:
    assert faust_broker_credentials({}) == (None, [])
    assert faust_broker_credentials({"security.protocol": "plaintext"}) == (None, [])
    assert aiokafka_auth({}) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    auth = aiokafka_auth(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism,
            "sasl.username": "svc",
            "sasl.password": "s3cret",
        }
    )
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


def test_sasl_ssl_with_ca_and_singular_mechanism_name() -> None:
    options = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "scram-sha-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
    }
    if CA.is_file():  # the system CA bundle stands in for a broker's CA file
        options["ssl.ca.location"] = str(CA)
    auth = aiokafka_auth(options)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_without_verification_and_without_host_name_check() -> None:
    auth = aiokafka_auth(
        {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}
    )
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].verify_mode == ssl.CERT_NONE
    auth = aiokafka_auth(
        {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"}
    )
    assert not auth["ssl_context"].check_hostname
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_gssapi() -> None:
    auth = aiokafka_auth(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "GSSAPI",
            "sasl.kerberos.service.name": "kafka-prod",
        }
    )
    assert auth["sasl_mechanism"] == "GSSAPI"
    assert auth["sasl_kerberos_service_name"] == "kafka-prod"


def test_tuning_options_are_reported_not_passed() -> None:
    credentials, ignored = faust_broker_credentials(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "p",
            "client.id": "x",
            "socket.keepalive.enable": "true",
        }
    )
    assert isinstance(credentials, faust.SASLCredentials)
    assert ignored == ["client.id", "socket.keepalive.enable"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER"}, "OAUTHBEARER"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "sasl.username"),
        ({"security.protocol": "KERBEROS"}, "security.protocol"),
        ({"sasl.username": "u", "sasl.password": "p"}, "PLAINTEXT"),
        ({"security.protocol": "SSL", "ssl.key.location": "k.pem"}, "ssl.certificate.location"),
        (
            {"security.protocol": "SSL", "enable.ssl.certificate.verification": "maybe"},
            "true or false",
        ),
    ],
)
def test_settings_faust_cannot_honour_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        faust_broker_credentials(options)


def test_the_faust_app_gets_the_credentials(tmp_path: Path) -> None:
    """The engine passes the mapped credentials into the faust app's configuration."""
    from streams.faust_app import FaustEngine

    class NoTopics(FaustEngine):
        def _raw_partitions(self) -> dict[str, int]:  # no broker in a unit test
            return {self.pipeline.raw_topic(name): 1 for name in self.pipeline.sources}

    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings

    pipeline = PipelineConfig.model_validate(
        {
            "sources": {
                "clicks": {
                    "kind": "push",
                    "mapping": {
                        "event_id": "$.id",
                        "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
                        "event_type": "$.type",
                    },
                }
            }
        }
    )
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        kafka_options={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "svc",
            "sasl.password": "pw",
        },
    )
    engine = NoTopics(settings, pipeline)
    credentials = engine.app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.mechanism.value) == ("svc", "SCRAM-SHA-256")
