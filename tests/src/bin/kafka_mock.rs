//! `buslink-kafka-mock`: a Kafka cluster for tests, librdkafka's mock cluster (the real
//! protocol, on loopback), driven through standard input.
//!
//! Starts `--brokers N` brokers, creates each `--topic NAME:PARTITIONS`, prints
//! `bootstrap HOST:PORT,...` and then answers one line per command (`ok ...` or `error ...`):
//!
//! | command | what it does |
//! | --- | --- |
//! | `produce-rows TOPIC PARTITION FILE` | produces the rows of a Hermes bus dump (JSON lines with `data` and `timestamp`) as hermes-server does: key = the event's `evcategory`, value = the event's JSON text, record time = the row's |
//! | `produce TOPIC N [PARTITION]` | produces N Hermes-shaped `base` events (key `base`) numbered from the topic's count so far, the number in `objpkey`; without a partition, round robin over the topic's partitions |
//! | `down ID` / `up ID` | takes broker ID (1..N, -1 all) down or up |
//! | `quit` | ends |
//!
//! It ends when its standard input closes (the test that started it is gone) or after
//! `--max-seconds`, whichever comes first.

use clap::Parser;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// How many brokers.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// A topic to create, `NAME:PARTITIONS` (repeatable).
    #[arg(long)]
    topic: Vec<String>,
    /// The longest the cluster lives, in seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = MockCluster::new(args.brokers)?;
    let mut partitions_of: HashMap<String, i32> = HashMap::new();
    for topic in &args.topic {
        let (name, partitions) = topic
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--topic {topic}: NAME:PARTITIONS expected"))?;
        let partitions: i32 = partitions.parse()?;
        cluster.create_topic(name, partitions, 1)?;
        partitions_of.insert(name.to_owned(), partitions);
    }
    let bootstrap = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "30000")
        .create()?;
    println!("bootstrap {bootstrap}");
    // The deadline: stdin is read on a thread; the cluster stays on this one (it is !Send).
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(args.max_seconds);
    let mut produced: HashMap<String, u64> = HashMap::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => break,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["quit"] => break,
            ["down", id] => id
                .parse()
                .map_err(anyhow::Error::from)
                .and_then(|id| Ok(cluster.broker_down(id)?))
                .map(|()| "ok".to_owned()),
            ["up", id] => id
                .parse()
                .map_err(anyhow::Error::from)
                .and_then(|id| Ok(cluster.broker_up(id)?))
                .map(|()| "ok".to_owned()),
            ["produce-rows", topic, partition, file] => {
                produce_rows(&producer, topic, partition.parse()?, file)
            }
            ["produce", topic, count, rest @ ..] => {
                let partition = rest.first().map(|p| p.parse()).transpose()?;
                let spread = partitions_of.get(*topic).copied().unwrap_or(1);
                let start = produced.entry((*topic).to_owned()).or_default();
                let result =
                    produce_numbered(&producer, topic, *start, count.parse()?, partition, spread);
                if let Ok(n) = &result {
                    *start += n;
                }
                result.map(|n| format!("ok {n}"))
            }
            _ => Err(anyhow::anyhow!("unknown command: {line}")),
        };
        match answer {
            Ok(text) => println!("{text}"),
            Err(error) => println!("error {error:#}"),
        }
    }
    drop(producer);
    drop(cluster);
    Ok(())
}

fn send(producer: &BaseProducer, record: BaseRecord<'_, str, str>) -> anyhow::Result<()> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((error, back)) => {
                if error.rdkafka_error_code() != Some(rdkafka::error::RDKafkaErrorCode::QueueFull) {
                    return Err(error.into());
                }
                producer.poll(Duration::from_millis(50));
                record = back;
            }
        }
    }
}

fn produce_rows(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    file: &str,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)?;
    let mut count = 0;
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let data = row["data"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a row without data"))?;
        let event: serde_json::Value = serde_json::from_str(data)?;
        let category = event["evcategory"].as_str().unwrap_or("base").to_owned();
        let millis = (row["timestamp"].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
        send(
            producer,
            BaseRecord::to(topic)
                .partition(partition)
                .key(category.as_str())
                .payload(data)
                .timestamp(millis),
        )?;
        count += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(format!("ok {count}"))
}

fn produce_numbered(
    producer: &BaseProducer,
    topic: &str,
    start: u64,
    count: u64,
    partition: Option<i32>,
    spread: i32,
) -> anyhow::Result<u64> {
    for n in start..start + count {
        let value = format!(
            "{{\"evcategory\": \"base\", \"eventtype\": \"added\", \"objtype\": \"Numbered\", \
             \"objpkey\": {n}, \"objattrs\": {{\"n\": {n}}}, \"step\": 0, \
             \"isPartiallyProcessed\": false}}"
        );
        let round_robin = i32::try_from(n % u64::try_from(spread.max(1))?)?;
        let record = BaseRecord::to(topic)
            .key("base")
            .payload(value.as_str())
            .partition(partition.unwrap_or(round_robin));
        send(producer, record)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(count)
}
