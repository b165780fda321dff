"""``settings.kafka_options`` (librdkafka names) translated for faust's aiokafka clients.

Every confluent-kafka client gets ``settings.kafka_options`` as they are; faust's consumer,
producer and admin (aiokafka) take one ``broker_credentials`` object instead. This module maps
the security options people actually set:

=====================================  =============================================
librdkafka option                      faust / aiokafka
=====================================  =============================================
``security.protocol``                  ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``,
                                       ``SASL_SSL`` (credentials class and protocol)
``sasl.mechanism(s)``                  ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``,
                                       ``GSSAPI``
``sasl.username`` / ``sasl.password``  ``SASLCredentials(username, password)``
``sasl.kerberos.service.name``         ``GSSAPICredentials(kerberos_service_name)``
``ssl.ca.location``                    CA file (or directory) of the SSL context
``ssl.certificate.location`` /         client certificate chain and key (mutual TLS)
``ssl.key.location`` /
``ssl.key.password``
``ssl.endpoint.identification``        ``none`` turns host name checking off
``.algorithm``
``enable.ssl.certificate.verification``  ``false`` turns certificate checks off
=====================================  =============================================

Anything else in ``kafka_options`` is client tuning for librdkafka and is not passed to
faust (:func:`faust_broker_credentials` returns those names so the worker can log them).
Settings faust cannot express (``OAUTHBEARER``, an unknown protocol or mechanism, SASL
without a username) raise ValueError naming the option, so a worker never silently connects
without the security the configuration asks for.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

SECURITY_OPTIONS = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")


def _flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"kafka_options[{name!r}]: expected true or false, got {value!r}")


def ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The client SSL context the ``ssl.*`` options describe."""
    ca = options.get("ssl.ca.location")
    if ca is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    elif str(ca).endswith("/"):
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=str(ca))
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    certificate = options.get("ssl.certificate.location")
    if certificate is not None:
        key = options.get("ssl.key.location")
        password = options.get("ssl.key.password")
        context.load_cert_chain(
            str(certificate),
            keyfile=str(key) if key is not None else None,
            password=str(password) if password is not None else None,
        )
    elif options.get("ssl.key.location") is not None:
        raise ValueError("kafka_options: ssl.key.location needs ssl.certificate.location")
    algorithm = str(options.get("ssl.endpoint.identification.algorithm", "https")).lower()
    if algorithm not in ("https", "none", ""):
        raise ValueError(
            "kafka_options['ssl.endpoint.identification.algorithm']: expected https or none, "
            f"got {algorithm!r}"
        )
    if algorithm in ("none", ""):
        context.check_hostname = False
    if not _flag(options, "enable.ssl.certificate.verification", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def faust_broker_credentials(options: Mapping[str, Any]) -> tuple[Any | None, list[str]]:
    """``(broker_credentials for faust.App or None, names of options not passed to faust)``.

    None means plaintext without authentication (no security option set, or
    ``security.protocol=PLAINTEXT``). Raises ValueError for settings faust cannot honour.
    """
    import faust

    ignored = sorted(name for name in options if name not in SECURITY_OPTIONS)
    protocol = str(options.get("security.protocol", "PLAINTEXT")).strip().upper()
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"kafka_options['security.protocol']: {protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    mechanism_option = "sasl.mechanisms" if "sasl.mechanisms" in options else "sasl.mechanism"
    mechanism = str(options.get(mechanism_option, "GSSAPI")).strip().upper()
    if protocol == "PLAINTEXT":
        if any(name.startswith(("sasl.", "ssl.")) for name in options):
            raise ValueError(
                "kafka_options sets sasl.*/ssl.* options but security.protocol is PLAINTEXT "
                "(set security.protocol to SSL, SASL_PLAINTEXT or SASL_SSL)"
            )
        return None, ignored
    context = ssl_context(options) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context), ignored
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"kafka_options[{mechanism_option!r}]: {mechanism!r} cannot be passed to faust "
            f"(supported: {', '.join(SASL_MECHANISMS)}; OAUTHBEARER needs a token callback)"
        )
    if mechanism == "GSSAPI":
        return (
            faust.GSSAPICredentials(
                kerberos_service_name=str(options.get("sasl.kerberos.service.name", "kafka")),
                ssl_context=context,
                mechanism=mechanism,
            ),
            ignored,
        )
    username = options.get("sasl.username")
    password = options.get("sasl.password")
    if not username or password is None:
        raise ValueError(f"kafka_options: SASL {mechanism} needs sasl.username and sasl.password")
    return (
        faust.SASLCredentials(
            username=str(username),
            password=str(password),
            ssl_context=context,
            mechanism=mechanism,
        ),
        ignored,
    )
