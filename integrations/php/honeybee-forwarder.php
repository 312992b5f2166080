<?php
/**
 * HoneyBee forwarder for PHP honeypots: sends events to the local HoneyBee Node as JSON
 * lines (127.0.0.1:9100 by default).
 *
 * It never throws, never prints, and never emits a PHP warning or notice into the host page:
 * connection problems make sendEvent() return false and are written to the PHP error log at
 * most once per process. One connection is kept open for all events of a request (or of a
 * long-running worker) and reopened when it breaks. Connect and write are bounded by a
 * 1 second timeout. PHP 7.4 or newer.
 *
 * Settings come from the environment the node gives its honeypots:
 * HONEYBEE_EVENT_PORT (default 9100), HONEYBEE_POT_ID (default "honeypot-01"),
 * HONEYBEE_HONEYPOT_TYPE (default "honeypot") and, optionally, HONEYBEE_EVENT_HOST
 * (default 127.0.0.1: the node listens on IPv4 loopback only).
 */

class HoneyBeeForwarder
{
    /** @var int */
    private $port;
    /** @var string */
    private $potId;
    /** @var string */
    private $potType;
    /** @var string */
    private $host;
    /** @var float */
    private $timeout;
    /** @var resource|null */
    private $socket = null;
    /** @var bool */
    private static $failureLogged = false;

    /**
     * @param array $options optional overrides: port, pot_id, pot_type, host, timeout (seconds)
     */
    public function __construct(array $options = [])
    {
        $port = (int)($options['port'] ?? self::setting('HONEYBEE_EVENT_PORT', '9100'));
        $this->port = ($port > 0 && $port < 65536) ? $port : 9100;
        $this->potId = (string)($options['pot_id'] ?? self::setting('HONEYBEE_POT_ID', 'honeypot-01'));
        $this->potType = (string)($options['pot_type'] ?? self::setting('HONEYBEE_HONEYPOT_TYPE', 'honeypot'));
        $this->host = (string)($options['host'] ?? self::setting('HONEYBEE_EVENT_HOST', '127.0.0.1'));
        $this->timeout = (float)($options['timeout'] ?? 1.0);
    }

    /**
     * Sends one event. Returns true when it was written to the node, false otherwise.
     *
     * @param string $eventType e.g. "login.failed"
     * @param mixed  $data      an array (becomes the event's data object); other values are
     *                          wrapped as {"value": ...}
     */
    public function sendEvent($eventType, $data = []): bool
    {
        try {
            $line = $this->encode((string)$eventType, $data);
            if ($line === null) {
                return false;
            }
            // One retry on a fresh connection: a kept-open connection may have been closed
            // by a node restart since the last event.
            if ($this->socket !== null && $this->peerClosed()) {
                $this->disconnect();
            }
            for ($attempt = 0; $attempt < 2; $attempt++) {
                if ($this->socket === null && !$this->connect()) {
                    return false;
                }
                if ($this->write($line)) {
                    return true;
                }
                $this->disconnect();
            }
            return false;
        } catch (\Throwable $error) {
            self::logOnce('honeybee: sendEvent failed: ' . $error->getMessage());
            return false;
        }
    }

    /** Closes the connection (also done automatically when the object goes away). */
    public function close(): void
    {
        $this->disconnect();
    }

    public function __destruct()
    {
        $this->disconnect();
    }

    private static function setting(string $name, string $default): string
    {
        if (isset($_ENV[$name]) && $_ENV[$name] !== '') {
            return (string)$_ENV[$name];
        }
        $value = getenv($name);
        return ($value === false || $value === '') ? $default : $value;
    }

    /** ISO 8601 UTC with microseconds and Z, e.g. 2024-01-15T10:30:00.123456Z. */
    private static function timestamp(): string
    {
        $now = \DateTime::createFromFormat('U.u', sprintf('%.6F', microtime(true)));
        if ($now === false) {
            return gmdate('Y-m-d\TH:i:s\Z');
        }
        return $now->setTimezone(new \DateTimeZone('UTC'))->format('Y-m-d\TH:i:s.u\Z');
    }

    private function encode(string $eventType, $data): ?string
    {
        if ($data === null) {
            $data = [];
        } elseif (!is_array($data) && !is_object($data)) {
            $data = ['value' => $data];
        }
        $event = [
            'pot_id' => $this->potId,
            'pot_type' => $this->potType,
            'event_type' => $eventType,
            'timestamp' => self::timestamp(),
            // An empty PHP array would encode as [], but data must be an object.
            'data' => (is_array($data) && $data === []) ? new \stdClass() : $data,
        ];
        // Invalid UTF-8 is replaced and unencodable values (resources, NAN) become null,
        // instead of losing the whole event.
        $flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PARTIAL_OUTPUT_ON_ERROR
            | JSON_INVALID_UTF8_SUBSTITUTE;
        $json = json_encode($event, $flags);
        if ($json === false) {
            self::logOnce('honeybee: event could not be encoded: ' . json_last_error_msg());
            return null;
        }
        return $json . "\n";
    }

    private function connect(): bool
    {
        $errno = 0;
        $errstr = '';
        $socket = $this->quietly(function () use (&$errno, &$errstr) {
            return stream_socket_client(
                'tcp://' . $this->host . ':' . $this->port,
                $errno,
                $errstr,
                $this->timeout
            );
        });
        if (!is_resource($socket)) {
            self::logOnce(sprintf('honeybee: node at %s:%d unreachable: %s', $this->host, $this->port, $errstr));
            return false;
        }
        $seconds = (int)$this->timeout;
        stream_set_timeout($socket, $seconds, (int)(($this->timeout - $seconds) * 1000000));
        $this->socket = $socket;
        return true;
    }

    private function write(string $line): bool
    {
        $socket = $this->socket;
        $length = strlen($line);
        $written = 0;
        while ($written < $length) {
            $count = $this->quietly(function () use ($socket, $line, $written) {
                return fwrite($socket, substr($line, $written));
            });
            if ($count === false || $count === 0) {
                return false;
            }
            $meta = stream_get_meta_data($socket);
            if (!empty($meta['timed_out'])) {
                return false;
            }
            $written += $count;
        }
        return true;
    }

    /**
     * The node never writes on this connection, so a readable socket means the node closed
     * it (restart): writing would appear to succeed and the event would be lost.
     */
    private function peerClosed(): bool
    {
        $socket = $this->socket;
        $ready = $this->quietly(function () use ($socket) {
            $read = [$socket];
            $write = null;
            $except = null;
            return stream_select($read, $write, $except, 0);
        });
        return $ready === false || $ready > 0;
    }

    private function disconnect(): void
    {
        if (is_resource($this->socket)) {
            $socket = $this->socket;
            $this->quietly(function () use ($socket) {
                return fclose($socket);
            });
        }
        $this->socket = null;
    }

    /** Runs $operation with PHP warnings and notices captured, so none reach the page. */
    private function quietly(callable $operation)
    {
        set_error_handler(static function () {
            return true;
        });
        try {
            return $operation();
        } finally {
            restore_error_handler();
        }
    }

    private static function logOnce(string $message): void
    {
        if (!self::$failureLogged) {
            self::$failureLogged = true;
            error_log($message . ' (further failures are not logged)');
        }
    }
}
