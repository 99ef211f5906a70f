//! Hadoop SequenceFiles: streaming reader, writer, codecs and Writable
//! unwrapping. (Being built.)
