# GENERATED from the models (forkserve.config.schema.site_schema): do not edit. Regenerate with
#     .venv/bin/python -m forkserve.config.fast --regenerate
# The site JSON Schema without titles and descriptions, as a Python literal, so that the fast path
# (config.fast) reads it without pydantic or json. tests/config/test_fast.py fails when it drifts.
# ruff: noqa: E501

SCHEMA: dict = {
    '$defs': {
        'AppConfig': {
            'additionalProperties': False,
            'properties': {
                'module': {
                    'pattern': '^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z][A-Za-z0-9_]*(\\.[A-Za-z][A-Za-z0-9_]*)*$',
                    'type': 'string',
                },
                'binds': {'items': {'type': 'string'}, 'minItems': 1, 'type': 'array'},
                'workers': {'default': 1, 'maximum': 1024, 'minimum': 1, 'type': 'integer'},
                'worker_class': {'default': 'sync', 'enum': ['sync', 'gevent'], 'type': 'string'},
                'worker_connections': {'default': 1000, 'maximum': 100000, 'minimum': 1, 'type': 'integer'},
                'preload': {'default': False, 'type': 'boolean'},
                'timeout': {
                    'default': 30.0,
                    'exclusiveMinimum': 0,
                    'maximum': 86400,
                    'type': 'number',
                },
                'boot_timeout': {
                    'default': 60.0,
                    'exclusiveMinimum': 0,
                    'maximum': 86400,
                    'type': 'number',
                },
                'graceful_timeout': {
                    'anyOf': [
                        {'exclusiveMinimum': 0, 'maximum': 86400, 'type': 'number'},
                        {'type': 'null'},
                    ],
                    'default': None,
                },
                'max_requests': {'default': 0, 'minimum': 0, 'type': 'integer'},
                'max_requests_jitter': {'default': 0, 'minimum': 0, 'type': 'integer'},
                'max_surge': {
                    'anyOf': [
                        {'type': 'integer', 'minimum': 0, 'maximum': 1024},
                        {'type': 'string', 'pattern': '^(100|[1-9]?[0-9])%$'},
                    ],
                    'default': 1,
                },
                'max_unavailable': {
                    'anyOf': [
                        {'type': 'integer', 'minimum': 0, 'maximum': 1024},
                        {'type': 'string', 'pattern': '^(100|[1-9]?[0-9])%$'},
                    ],
                    'default': 0,
                },
                'keepalive': {'default': 2.0, 'maximum': 3600, 'minimum': 0, 'type': 'number'},
                'backlog': {'default': 2048, 'maximum': 65535, 'minimum': 1, 'type': 'integer'},
                'unix_socket_mode': {'default': '0660', 'pattern': '^0?[0-7]{3}$', 'type': 'string'},
                'chdir': {'anyOf': [{'type': 'string'}, {'type': 'null'}], 'default': None},
                'pythonpath': {'default': [], 'items': {'type': 'string'}, 'type': 'array'},
                'env': {
                    'patternProperties': {'^[A-Za-z_][A-Za-z0-9_]*$': {'type': 'string'}},
                    'type': 'object',
                    'additionalProperties': False,
                },
                'limit_request_line': {'default': 4094, 'maximum': 8190, 'minimum': 0, 'type': 'integer'},
                'limit_request_fields': {'default': 100, 'maximum': 32768, 'minimum': 0, 'type': 'integer'},
                'limit_request_field_size': {'default': 8190, 'maximum': 65536, 'minimum': 0, 'type': 'integer'},
            },
            'required': ['module', 'binds'],
            'type': 'object',
        },
        'ServerConfig': {
            'additionalProperties': False,
            'properties': {
                'control_socket': {'anyOf': [{'type': 'string'}, {'type': 'null'}], 'default': None},
                'graceful_timeout': {
                    'default': 30.0,
                    'exclusiveMinimum': 0,
                    'maximum': 86400,
                    'type': 'number',
                },
                'log_level': {
                    'default': 'info',
                    'enum': ['debug', 'info', 'warning', 'error', 'critical'],
                    'type': 'string',
                },
                'access_log': {
                    'anyOf': [{'type': 'string'}, {'const': False, 'type': 'boolean'}],
                    'default': False,
                },
                'error_log': {'default': '-', 'type': 'string'},
                'pidfile': {'anyOf': [{'type': 'string'}, {'type': 'null'}], 'default': None},
                'watch': {'default': True, 'type': 'boolean'},
                'metrics': {'anyOf': [{'type': 'string'}, {'type': 'null'}], 'default': None},
            },
            'type': 'object',
        },
    },
    'additionalProperties': False,
    'properties': {
        'server': {'$ref': '#/$defs/ServerConfig'},
        'apps': {
            'minProperties': 1,
            'patternProperties': {'^[a-z][a-z0-9_-]{0,62}$': {'$ref': '#/$defs/AppConfig'}},
            'type': 'object',
            'additionalProperties': False,
        },
    },
    'required': ['apps'],
    'type': 'object',
}
