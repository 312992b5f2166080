<?php
/**
 * Tests of HoneyBeeForwarder against a real HoneyBee Core and Node.
 *
 * Run by crates/cli/tests/integrations.rs with HONEYBEE_TEST_API, HONEYBEE_TEST_EVENT_PORT,
 * HONEYBEE_TEST_CORE and HONEYBEE_NODE_BIN in the environment. Exits non-zero on failure.
 */

require __DIR__ . '/../honeybee-forwarder.php';

$api = getenv('HONEYBEE_TEST_API');
$eventPort = (int)getenv('HONEYBEE_TEST_EVENT_PORT');
$core = getenv('HONEYBEE_TEST_CORE');
$nodeBinary = getenv('HONEYBEE_NODE_BIN');
$failures = [];
$passed = 0;

function check(bool $condition, string $what): void
{
    global $failures, $passed;
    if ($condition) {
        $passed++;
    } else {
        $failures[] = $what;
        fwrite(STDERR, "FAIL: $what\n");
    }
}

function unique(string $prefix): string
{
    return $prefix . '-' . bin2hex(random_bytes(5));
}

function freePort(): int
{
    $server = stream_socket_server('tcp://127.0.0.1:0');
    $name = stream_socket_get_name($server, false);
    fclose($server);
    return (int)substr($name, strrpos($name, ':') + 1);
}

/** All stored events of a pot, polling until $count arrived or 15 s passed. */
function eventsOf(string $potId, int $count): array
{
    global $api;
    $deadline = microtime(true) + 15;
    do {
        $page = json_decode(file_get_contents("$api/api/v1/events?limit=1000&pot_id=" . urlencode($potId)), true);
        $events = $page['events'];
        if (count($events) >= $count) {
            return $events;
        }
        usleep(50000);
    } while (microtime(true) < $deadline);
    return $events;
}

function startNode(int $port)
{
    global $core, $nodeBinary;
    $state = sys_get_temp_dir() . '/' . unique('php-node');
    $process = proc_open(
        [$nodeBinary, '--core', $core, '--event-port', (string)$port, '--data-dir', $state, '--name', 'php-test'],
        [1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']],
        $pipes
    );
    $deadline = microtime(true) + 15;
    while (microtime(true) < $deadline) {
        $probe = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 0.2);
        if ($probe) {
            fclose($probe);
            return $process;
        }
        usleep(20000);
    }
    throw new RuntimeException("node on port $port did not start");
}

function stopNode($process): void
{
    proc_terminate($process);
    proc_close($process);
}

// Settings: the guide's defaults, getenv(), and $_ENV taking precedence.
foreach (['HONEYBEE_EVENT_PORT', 'HONEYBEE_POT_ID', 'HONEYBEE_HONEYPOT_TYPE'] as $name) {
    putenv($name);
    unset($_ENV[$name]);
}
$property = function (HoneyBeeForwarder $forwarder, string $name) {
    $reflection = new ReflectionProperty(HoneyBeeForwarder::class, $name);
    $reflection->setAccessible(true);
    return $reflection->getValue($forwarder);
};
$defaults = new HoneyBeeForwarder();
check($property($defaults, 'port') === 9100, 'default port is 9100');
check($property($defaults, 'potId') === 'honeypot-01', 'default pot id');
check($property($defaults, 'potType') === 'honeypot', 'default pot type');

// Events reach the core with the right fields.
$potId = unique('php');
putenv("HONEYBEE_EVENT_PORT=$eventPort");
putenv("HONEYBEE_POT_ID=$potId");
putenv('HONEYBEE_HONEYPOT_TYPE=wordpress');
$_ENV['HONEYBEE_HONEYPOT_TYPE'] = 'wordpress-env';
$forwarder = new HoneyBeeForwarder();
$memory = fopen('php://memory', 'r');
check($forwarder->sendEvent('login.failed', [
    'log' => 'admin',
    'pwd' => '123456',
    'src_ip' => '198.51.100.7',
    'bad_utf8' => "ok\xff",
    'resource' => $memory,
]) === true, 'sendEvent to a live node returns true');
check($forwarder->sendEvent('ping', []) === true, 'empty data is sent');
check($forwarder->sendEvent('scalar', 'just text') === true, 'scalar data is sent');
$events = eventsOf($potId, 3);
$byType = [];
foreach ($events as $event) {
    $byType[$event['event_type']] = $event;
}
check(count($events) === 3, 'three events stored, got ' . count($events));
$login = $byType['login.failed'] ?? null;
check($login !== null && $login['pot_id'] === $potId, 'pot_id from the environment');
check($login !== null && $login['pot_type'] === 'wordpress-env', '$_ENV wins over getenv()');
check($login !== null && $login['data']['log'] === 'admin' && $login['data']['pwd'] === '123456', 'data kept');
check($login !== null && $login['data']['bad_utf8'] === "ok\u{FFFD}", 'invalid UTF-8 is replaced, not fatal');
check($login !== null && array_key_exists('resource', $login['data']) && $login['data']['resource'] === null, 'a resource becomes null');
check($login !== null && preg_match('/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/', $login['timestamp']) === 1, 'ISO 8601 UTC timestamp with Z: ' . ($login['timestamp'] ?? ''));
check($login !== null && abs(strtotime($login['timestamp']) - time()) < 30, 'timestamp is now');
check(isset($byType['ping']) && $byType['ping']['data'] === [], 'empty data is an empty object');
check(isset($byType['scalar']) && $byType['scalar']['data'] === ['value' => 'just text'], 'scalar data is wrapped');

// No node: false, fast, silent.
$deadPort = freePort();
$warnings = [];
set_error_handler(function ($severity, $message) use (&$warnings) {
    $warnings[] = $message;
    return true;
});
ob_start();
$down = new HoneyBeeForwarder(['port' => $deadPort, 'pot_id' => unique('down')]);
$slowest = 0.0;
$allFalse = true;
for ($i = 0; $i < 100; $i++) {
    $started = microtime(true);
    $allFalse = $allFalse && ($down->sendEvent('lost', ['i' => $i]) === false);
    $slowest = max($slowest, microtime(true) - $started);
}
$printed = ob_get_clean();
restore_error_handler();
check($allFalse, 'sendEvent returns false without a node');
check($slowest < 1.5, "each call is bounded by the 1 s timeout (slowest $slowest s)");
check($printed === '', 'nothing is printed into the page');
check($warnings === [], 'no PHP warning or notice escapes: ' . implode('; ', $warnings));

// One kept-open connection survives a node restart.
$restartPort = freePort();
$restartPot = unique('restart');
$node = startNode($restartPort);
$kept = new HoneyBeeForwarder(['port' => $restartPort, 'pot_id' => $restartPot, 'pot_type' => 'php']);
check($kept->sendEvent('before.restart', []) === true, 'first event on a fresh node');
check(count(eventsOf($restartPot, 1)) === 1, 'first event stored');
stopNode($node);
$node = startNode($restartPort);
check($kept->sendEvent('after.restart', []) === true, 'event after the node restarted');
$events = eventsOf($restartPot, 2);
check(count($events) === 2, 'the event after the restart was not lost on the dead connection');
stopNode($node);

$failed = count($failures);
echo "php forwarder: $passed passed, $failed failed\n";
exit($failed === 0 ? 0 : 1);
