"""The embedded stack: Tansu broker, SeaweedFS S3 and PostgreSQL as local processes.

:mod:`hosepipe.localstack.servers` launches one server each (used by ``hosepipe up`` and by
the test fixtures); :mod:`hosepipe.localstack.supervisor` runs the whole stack and the
components on top of it.
"""
